"""geoseg vectorize: blocks equal the whole map; outputs read back; guards; hostile CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.features import shapes
from shapely.geometry import shape

from geoseg.errors import ConfigError, InputError, OutputError, RasterReadError
from geoseg.run.vector import Block, iter_polygons, merge_blocks, parse_min_area, vectorize
from tests.conftest import write_geotiff
from tests.hostile import assert_refused, run_cli, snapshot
from tilers.grid import blocks

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COG_CMAP = SHARED / "rasters" / "cog_cmap.tif"
NAMES = ["water", "forest", "urban", "field"]
PIXEL = 10.0  # write_geotiff's default grid: 10 m pixels in EPSG:32618


# --------------------------------------------------------------------------------------------
# Generated class maps
# --------------------------------------------------------------------------------------------


def blob_map(h: int, w: int, seed: int, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of ``k`` classes with single-pixel islands (holes), diagonal contacts and nodata."""
    rng = np.random.default_rng(seed)
    s = int(rng.integers(2, 6))
    coarse = rng.integers(0, k, (h // s + 2, w // s + 2))
    dy, dx = rng.integers(0, s, 2)
    ids = np.kron(coarse, np.ones((s, s), int))[dy : dy + h, dx : dx + w].astype(np.int32)
    islands = rng.random((h, w)) < 0.04
    ids[islands] = rng.integers(0, k, int(islands.sum()))
    valid = rng.random((h, w)) > 0.03
    r, c = rng.integers(0, max(h - 4, 1)), rng.integers(0, max(w - 4, 1))
    valid[r : r + 4, c : c + 3] = False
    return ids, valid


def ring_map() -> tuple[np.ndarray, np.ndarray]:
    """A ring around an island around a nodata hole, a U shape, and a diagonal checkerboard."""
    ids = np.zeros((24, 30), np.int32)
    ids[2:20, 2:20] = 1
    ids[5:17, 5:17] = 2
    ids[9:13, 9:13] = 1
    valid = np.ones(ids.shape, bool)
    valid[10:12, 10:12] = False
    ids[2:22, 22:24] = 3  # a U: two arms joined at the bottom, across several blocks
    ids[2:22, 26:28] = 3
    ids[20:22, 22:28] = 3
    ids[22:24, 0:8] = np.indices((2, 8)).sum(0) % 2 + 1  # diagonal-only contacts
    return ids, valid


def tiles(ids: np.ndarray, valid: np.ndarray, size: int):
    for win in blocks(*ids.shape, size):
        rows, cols = slice(win.row, win.row_stop), slice(win.col, win.col_stop)
        yield Block(win.row, win.col, ids[rows, cols], valid[rows, cols])


def whole(ids: np.ndarray, valid: np.ndarray, transform=None) -> list[tuple[int, object]]:
    kw = {} if transform is None else {"transform": transform}
    return [(int(v), shape(g)) for g, v in shapes(ids, valid, connectivity=4, **kw)]


def canonical(polygons) -> dict[int, list[bytes]]:
    """Per class, the sorted polygons without collinear vertices, normalized (exact compare)."""
    out: dict[int, list[bytes]] = {}
    for k, g in polygons:
        out.setdefault(int(k), []).append(shapely.normalize(shapely.simplify(g, 0)).wkb)
    return {k: sorted(v) for k, v in out.items()}


def class_areas(polygons) -> dict[int, float]:
    out: dict[int, float] = {}
    for k, g in polygons:
        out[int(k)] = out.get(int(k), 0.0) + g.area
    return out


def pixel_areas(ids, valid, pixel_area=1.0) -> dict[int, float]:
    values, counts = np.unique(ids[valid], return_counts=True)
    return {int(v): float(n) * pixel_area for v, n in zip(values, counts, strict=True)}


def write_classmap(path: Path, ids, valid, *, nodata=255, names=NAMES, **kw) -> Path:
    import rasterio

    data = np.where(valid, ids, nodata).astype(kw.pop("dtype", "uint8"))
    write_geotiff(path, data, nodata=nodata, **kw)
    if names:
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(1, CLASS_NAMES=json.dumps(names))
    return path


# --------------------------------------------------------------------------------------------
# The merge equals the whole map
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_blocks_equal_whole_map(seed):
    h, w = 37 + 5 * seed, 41 + 3 * seed
    ids, valid = blob_map(h, w, seed)
    ref = whole(ids, valid)
    for size in (3, 7, 64):
        got = list(merge_blocks(tiles(ids, valid, size), h, w))
        assert all(g.geom_type == "Polygon" and g.is_valid for _, g in got)
        assert len(got) == len(ref), size
        assert canonical(got) == canonical(ref), f"block size {size}"
        assert class_areas(got) == pytest.approx(pixel_areas(ids, valid)), size


def test_holes_u_shapes_and_diagonals():
    ids, valid = ring_map()
    ref = whole(ids, valid)
    assert any(len(g.interiors) for _, g in ref)  # the ring and island have holes
    for size in (1, 2, 3, 5, 7):
        got = list(merge_blocks(tiles(ids, valid, size), *ids.shape))
        assert canonical(got) == canonical(ref), f"block size {size}"
    # the checkerboard: 16 single pixels, none joined across a diagonal
    assert sum(1 for _, g in got if g.area == 1 and g.bounds[1] >= 22) == 16


def test_map_coordinates_and_pixel_areas():
    from affine import Affine

    ids, valid = blob_map(50, 45, 11)
    transform = Affine(2.5, 0.0, 300000.0, 0.0, -2.5, 5000000.0)
    ref = whole(ids, valid, transform)
    got = list(iter_polygons(tiles(ids, valid, 7), 50, 45, tuple(transform)[:6], batch=10))
    assert canonical(got) == canonical(ref)
    assert class_areas(got) == pytest.approx(pixel_areas(ids, valid, 2.5 * 2.5))


def test_blocks_out_of_order_are_refused():
    ids, valid = blob_map(20, 20, 0)
    listed = list(tiles(ids, valid, 8))
    with pytest.raises(InputError, match="out of order"):
        list(merge_blocks([listed[1], listed[0]], 20, 20))
    with pytest.raises(InputError, match="cover"):
        list(merge_blocks(listed[:-1], 20, 20))


# --------------------------------------------------------------------------------------------
# Outputs read back (no geopandas: pyogrio.raw and pyarrow)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def classmap(tmp_path):
    ids, valid = blob_map(60, 50, 3)
    return write_classmap(tmp_path / "classes.tif", ids, valid), ids, valid


def read_back(path: Path):
    """(crs, fields, class ids, class names, geometries) of a written file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        from pyproj import CRS

        table = pq.read_table(path)
        geo = json.loads(table.schema.metadata[b"geo"])
        column = geo["columns"]["geometry"]
        assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
        assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
        geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
        assert column["bbox"] == pytest.approx(list(shapely.total_bounds(geoms)))
        crs = CRS.from_json_dict(column["crs"])
        return (
            crs,
            table.column_names[:2],
            table["class_id"].to_numpy(),
            table["class_name"].to_pylist(),
            geoms,
        )
    import pyogrio
    import pyogrio.raw
    from pyproj import CRS

    info = pyogrio.read_info(path)
    assert info["layer_name"] == "classes" and info["geometry_type"] == "Polygon"
    meta, _, wkb, (class_id, class_name) = pyogrio.raw.read(path)
    return CRS(meta["crs"]), list(meta["fields"]), class_id, list(class_name), shapely.from_wkb(wkb)


@pytest.mark.parametrize("ext", [".gpkg", ".fgb", ".geojson", ".parquet"])
def test_formats_read_back(classmap, tmp_path, ext):
    from pyproj import CRS

    path, ids, valid = classmap
    out = tmp_path / f"out{ext}"
    summary = vectorize(path, out, block_size=16)
    assert summary.polygons == len(whole(ids, valid))
    assert summary.pixels == int(valid.sum())
    crs, fields, class_id, class_name, geoms = read_back(out)
    assert crs == CRS("EPSG:32618")
    assert fields == ["class_id", "class_name"]
    assert len(geoms) == summary.polygons and shapely.is_valid(geoms).all()
    assert class_name == [NAMES[k] for k in class_id]
    assert shapely.is_ccw(shapely.get_exterior_ring(geoms)).all()  # right-hand rule
    areas = {int(k): float(shapely.area(geoms[class_id == k]).sum()) for k in np.unique(class_id)}
    assert areas == pytest.approx(pixel_areas(ids, valid, PIXEL * PIXEL), rel=1e-9)
    assert sorted(os.listdir(tmp_path)) == sorted(["classes.tif", f"out{ext}"])


def test_no_geopandas_reader(classmap, tmp_path):
    import pyogrio

    out = tmp_path / "out.gpkg"
    vectorize(classmap[0], out)
    with pytest.raises(ImportError):
        pyogrio.read_dataframe(out)


def test_class_names_fallback_and_uint16_nodata(tmp_path):
    ids, valid = blob_map(30, 30, 5, k=3)
    path = write_classmap(
        tmp_path / "m.tif", ids + 7, valid, nodata=65535, names=None, dtype="uint16"
    )
    vectorize(path, tmp_path / "m.fgb")
    _, _, class_id, class_name, _ = read_back(tmp_path / "m.fgb")
    assert set(class_id) == set(np.unique(ids[valid] + 7))
    assert class_name == [f"class {k}" for k in class_id]


def test_zarr_classmap_names(tmp_path):
    import xarray as xr
    from affine import Affine

    pytest.importorskip("rioxarray")
    ids, valid = blob_map(30, 40, 1)
    data = np.where(valid, ids, 255).astype("uint8")
    coords = {"y": 4.2e6 - 10 * (np.arange(30) + 0.5), "x": 5e5 + 10 * (np.arange(40) + 0.5)}
    ds = xr.Dataset({"classes": (("y", "x"), data, {"class_names": NAMES})}, coords=coords)
    ds["classes"] = ds["classes"].rio.write_nodata(255)
    ds = ds.rio.write_crs("EPSG:32618").rio.write_transform(Affine(10, 0, 5e5, 0, -10, 4.2e6))
    ds.to_zarr(tmp_path / "m.zarr", consolidated=False)
    summary = vectorize(tmp_path / "m.zarr", tmp_path / "m.gpkg", block_size=16)
    _, _, class_id, class_name, geoms = read_back(tmp_path / "m.gpkg")
    assert summary.polygons == len(whole(ids, valid)) == len(geoms)
    assert class_name == [NAMES[k] for k in class_id]


def test_progress_and_all_nodata(tmp_path):
    ids = np.zeros((20, 20), np.int32)
    path = write_classmap(tmp_path / "empty.tif", ids, np.zeros(ids.shape, bool))
    calls = []
    summary = vectorize(
        path, tmp_path / "e.gpkg", block_size=8, progress=lambda d, t: calls.append((d, t))
    )
    assert summary.polygons == 0 and calls[-1] == (9, 9)
    vectorize(path, tmp_path / "e.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0


# --------------------------------------------------------------------------------------------
# --min-area, --simplify
# --------------------------------------------------------------------------------------------


def test_min_area_units(classmap, tmp_path):
    path, ids, valid = classmap
    n = len(whole(ids, valid))
    small = sum(1 for _, g in whole(ids, valid) if g.area < 3)  # pixels
    s1 = vectorize(path, tmp_path / "a.gpkg", min_area=300)  # map units: m^2 here (UTM)
    s2 = vectorize(path, tmp_path / "b.gpkg", min_area="300m2")
    s3 = vectorize(path, tmp_path / "c.gpkg", min_area="0.03ha")
    assert s1.polygons == s2.polygons == s3.polygons == n - small
    assert s1.dropped == small
    _, _, _, _, geoms = read_back(tmp_path / "c.gpkg")
    assert shapely.area(geoms).min() >= 300


def test_min_area_m2_geodesic(tmp_path):
    from rasterio.transform import from_origin

    from geoseg.core.areas import polygon_areas_m2

    ids, valid = blob_map(40, 40, 2)
    path = write_classmap(
        tmp_path / "geo.tif",
        ids,
        valid,
        crs="EPSG:4326",
        transform=from_origin(10.0, 50.0, 1e-4, 1e-4),
    )
    everything = list(
        iter_polygons(tiles(ids, valid, 40), 40, 40, (1e-4, 0.0, 10.0, 0.0, -1e-4, 50.0))
    )
    m2 = polygon_areas_m2([g for _, g in everything], "EPSG:4326")
    threshold = float(np.median(m2))
    summary = vectorize(path, tmp_path / "geo.gpkg", min_area=f"{threshold}m2")
    assert summary.polygons == int((m2 >= threshold).sum())


def test_simplify(classmap, tmp_path):
    path, ids, valid = classmap
    plain = vectorize(path, tmp_path / "p.gpkg")
    simple = vectorize(path, tmp_path / "s.gpkg", simplify=15)
    assert simple.polygons == plain.polygons
    a, b = read_back(tmp_path / "p.gpkg")[4], read_back(tmp_path / "s.gpkg")[4]
    assert shapely.get_num_coordinates(b).sum() < shapely.get_num_coordinates(a).sum()
    assert shapely.is_valid(b).all()


@pytest.mark.parametrize("value", ["abc", "-1", "5km2", "nan", "1e999", ""])
def test_bad_min_area(value):
    with pytest.raises(ConfigError, match="min_area"):
        parse_min_area(value)


# --------------------------------------------------------------------------------------------
# Overwrite, atomic output, GeoJSON CRS
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".gpkg", ".fgb", ".geojson", ".parquet"])
def test_overwrite_only_replaces_our_own(classmap, tmp_path, ext):
    path = classmap[0]
    out = tmp_path / f"out{ext}"
    vectorize(path, out)
    first = vectorize(path, out, overwrite=True, min_area=500)
    assert read_back(out)[4].size == first.polygons
    out.write_text("not a vector file")
    with pytest.raises(OutputError, match="not a .* file geoseg vectorize wrote"):
        vectorize(path, out, overwrite=True)
    assert out.read_text() == "not a vector file"


def test_foreign_vector_file_is_kept(classmap, tmp_path):
    import pyogrio.raw

    out = tmp_path / "roads.gpkg"
    wkb = shapely.to_wkb([shapely.box(0, 0, 1, 1)])
    pyogrio.raw.write(
        out,
        np.array(wkb, dtype=object),
        [np.array([1])],
        ["id"],
        layer="roads",
        driver="GPKG",
        geometry_type="Polygon",
    )
    before = out.read_bytes()
    with pytest.raises(OutputError, match="--overwrite only replaces"):
        vectorize(classmap[0], out, overwrite=True)
    assert out.read_bytes() == before


@pytest.mark.parametrize("ext", [".gpkg", ".parquet"])
@pytest.mark.parametrize("error", [RasterReadError("block 2 is corrupt"), KeyboardInterrupt()])
def test_failure_leaves_nothing_and_keeps_old_output(classmap, tmp_path, monkeypatch, ext, error):
    import geoseg.run.vector as vector

    path = classmap[0]
    out = tmp_path / f"out{ext}"
    vectorize(path, out)
    before = snapshot(tmp_path)
    real = vector.classmap_blocks

    def failing(source, block_size):
        for i, block in enumerate(real(source, block_size)):
            if i == 2:
                raise error
            yield block

    monkeypatch.setattr(vector, "classmap_blocks", failing)
    with pytest.raises(type(error)):
        vectorize(path, out, overwrite=True, block_size=8)
    assert snapshot(tmp_path) == before


def test_geojson_needs_an_epsg_crs(tmp_path):
    from pyproj import CRS

    ids, valid = blob_map(10, 10, 1)
    custom = CRS.from_proj4("+proj=tmerc +lon_0=13.3 +k=0.9996 +x_0=500000 +ellps=GRS80 +units=m")
    path = write_classmap(tmp_path / "c.tif", ids, valid, crs=custom.to_wkt())
    with pytest.raises(ConfigError, match="GeoJSON cannot record"):
        vectorize(path, tmp_path / "c.geojson")
    vectorize(path, tmp_path / "c.fgb")  # other formats keep any CRS
    assert read_back(tmp_path / "c.fgb")[0] == custom


# --------------------------------------------------------------------------------------------
# Hostile CLI
# --------------------------------------------------------------------------------------------


@pytest.fixture
def hostile(tmp_path):
    ids, valid = blob_map(20, 20, 0)
    cmap = write_classmap(tmp_path / "map.tif", ids, valid)
    write_geotiff(tmp_path / "float.tif", np.random.default_rng(0).random((1, 8, 8), np.float32))
    (tmp_path / "old.gpkg").write_text("someone's file")
    (tmp_path / "elsewhere.gpkg").write_text("target of a link")
    (tmp_path / "link.gpkg").symlink_to(tmp_path / "elsewhere.gpkg")
    return tmp_path, cmap


HOSTILE = [
    (["missing.tif", "o.gpkg"], ["missing.tif", "does not exist"]),
    (["float.tif", "o.gpkg"], ["float32", "gdal_translate"]),
    (["map.tif", "o.shp"], [".shp", ".gpkg"]),
    (["map.tif", "map.tif"], ["map.tif", "input"]),
    (["map.tif", "map.tif.aux.xml"], ["aux.xml", "input"]),
    (["map.tif", "link.gpkg"], ["link.gpkg", "symbolic link"]),
    (["map.tif", "old.gpkg"], ["old.gpkg", "--overwrite"]),
    (["map.tif", "old.gpkg", "--overwrite"], ["old.gpkg", "remove it yourself"]),
    (["map.tif", "o.gpkg", "--simplify", "abc"], ["'--simplify'", "abc", "2.5"]),
    (["map.tif", "o.gpkg", "--simplify", "-1"], ["'--simplify'", "-1"]),
    (["map.tif", "o.gpkg", "--min-area", "5km2"], ["'--min-area'", "5km2", "500m2"]),
    (["map.tif", "o.gpkg", "--min-area", "-3"], ["'--min-area'", "-3", "(25)"]),
    (["map.tif", "o.gpkg", "--block-size", "0"], ["'--block-size'", "block_size 0", "2048"]),
    (["map.tif", "nowhere/o.gpkg"], ["nowhere", "create it first"]),
]


@pytest.mark.parametrize(("args", "words"), HOSTILE, ids=[" ".join(a) for a, _ in HOSTILE])
def test_hostile_cli(hostile, monkeypatch, args, words):
    root, _ = hostile
    monkeypatch.chdir(root)
    before = snapshot(root)
    result = run_cli("vectorize", "--no-progress", *args)
    assert_refused(result, before, snapshot(root), *words)


def test_cli_writes_and_summarises(hostile, monkeypatch):
    root, _ = hostile
    monkeypatch.chdir(root)
    result = run_cli("vectorize", "map.tif", "o.parquet", "--min-area", "200", "-q")
    assert result.code == 0, result.err
    assert "polygons" in result.out and "o.parquet" in result.out and result.err == ""


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_real_classmap_crop(tmp_path):
    if not COG_CMAP.is_file():
        pytest.skip(f"real class map {COG_CMAP} is absent")
    import rasterio
    from rasterio.windows import Window

    window = Window(5632, 6144, 1024, 1024)  # ten land-cover classes
    with rasterio.open(COG_CMAP) as src:
        data = src.read(1, window=window)
        transform, crs, nodata = src.window_transform(window), src.crs, src.nodata
    crop = write_geotiff(
        tmp_path / "crop.tif", data, nodata=nodata, crs=crs.to_wkt(), transform=transform
    )
    valid = data != nodata
    ref = whole(data.astype(np.int32), valid, transform)
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    for size, ext in ((256, ".gpkg"), (300, ".parquet"), (1024, ".fgb")):
        out = tmp_path / f"crop_{size}{ext}"
        summary = vectorize(crop, out, block_size=size)
        _, _, class_id, _, geoms = read_back(out)
        assert summary.polygons == len(ref) == len(geoms)
        assert canonical(zip(class_id, geoms, strict=True)) == canonical(ref), size
        areas = class_areas(zip(class_id, geoms, strict=True))
        assert areas == pytest.approx(pixel_areas(data, valid, pixel_area), rel=1e-9)


@pytest.mark.integration
def test_spacenet_road_polygons_have_the_areas_stats_reports(tmp_path):
    """The real road mask (EPSG:4326) in blocks: geodesic polygon areas = stats' class areas."""
    import pyogrio.raw

    from geoseg.core.areas import polygon_areas_m2
    from geoseg.run.class_stats import class_stats

    mask = SHARED / "spacenet-roads-sample" / "sample_road_raster_mask.tif"
    if not mask.is_file():
        pytest.skip(f"real data file {mask} is absent")
    out = tmp_path / "roads.fgb"
    summary = vectorize(mask, out, block_size=300)
    assert summary.polygons > 0 and set(summary.classes) == {0, 255}
    meta, _, geoms, fields = pyogrio.raw.read(out)
    assert meta["crs"] == "EPSG:4326"
    ids = fields[list(meta["fields"]).index("class_id")]
    areas = polygon_areas_m2(shapely.from_wkb(geoms), meta["crs"])
    by_class = {row.class_id: row.area_m2 for row in class_stats(mask).rows()}
    for k in (0, 255):
        assert areas[ids == k].sum() == pytest.approx(by_class[k], rel=1e-6)
    # and the polygons equal those of the whole map at once
    whole = vectorize(mask, tmp_path / "w.fgb", block_size=1300)
    assert whole.polygons == summary.polygons and whole.classes == summary.classes
