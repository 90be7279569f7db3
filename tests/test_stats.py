"""``geoseg stats`` and :mod:`geoseg.run.class_stats`: counts, areas, zonal, hostile inputs.

Counts are checked against numpy's bincount of the whole array read at once, geodesic areas
against pyproj's Geod on each pixel's polygon, zonal counts against rasterio's rasterization of
the same polygons over the whole grid (reprojected by GDAL, not by the code under test).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_geotiff  # noqa: E402
from hostile import assert_refused, run_cli, snapshot  # noqa: E402

from geoseg.core.areas import pixel_area_m2, polygon_areas_m2  # noqa: E402
from geoseg.errors import ConfigError, InputError, LabelError  # noqa: E402
from geoseg.run.class_stats import ClassTally, class_stats, count_block  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEN1 = DATA / "sen1floods11-sample" / "Labels" / "Spain_7370579_LabelHand.tif"
ROADS = DATA / "spacenet-roads-sample" / "sample_road_raster_mask.tif"
COG_CMAP = DATA / "rasters" / "cog_cmap.tif"
ONE_DEGREE_AT_EQUATOR = 12_308_778_361.469452  # pyproj Geod(WGS84), cell 0..1 E x 0..1 N


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data {path} is absent (the ../shared/data folder beside the repo)")
    return path


def read_all(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def geod_row_areas(path: Path) -> np.ndarray:
    """Each row's pixel area straight from pyproj, on the file's own transform."""
    import rasterio
    from pyproj import CRS

    with rasterio.open(path) as src:
        g = CRS.from_user_input(src.crs.to_wkt()).get_geod()
        t = src.transform
        out = []
        for r in range(src.height):
            (x0, y0), (x1, y1) = t @ (0, r), t @ (1, r + 1)
            out.append(abs(g.polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])[0]))
    return np.array(out)


def by_id(zone: dict) -> dict[int, dict]:
    return {c["id"]: c for c in zone["classes"]}


def feature_collection(polygons: list, names: list | None = None) -> str:
    """GeoJSON of ``polygons`` (lists of rings), in EPSG:4326 as GeoJSON always is."""
    feats = []
    for i, rings in enumerate(polygons):
        props = {"name": names[i]} if names else {}
        geom = {"type": "Polygon", "coordinates": rings}
        feats.append({"type": "Feature", "properties": props, "geometry": geom})
    return json.dumps({"type": "FeatureCollection", "features": feats})


def box_ring(x0, y0, x1, y1) -> list:
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


# --------------------------------------------------------------------------------------------
# pure counting
# --------------------------------------------------------------------------------------------


def test_count_block_matches_bincount_with_every_kind_of_pixel_area():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, (30, 40)).astype(np.uint8)
    valid = rng.random(ids.shape) > 0.2
    row_area = rng.uniform(1, 2, 30)
    expected = np.bincount(ids[valid], minlength=6)
    for area, weights in (
        (2.5, np.full(ids.shape, 2.5)),
        (row_area, np.broadcast_to(row_area[:, None], ids.shape)),
        (
            np.broadcast_to(row_area[:, None], ids.shape),
            np.broadcast_to(row_area[:, None], ids.shape),
        ),
    ):
        classes, counts, areas = count_block(ids, valid, area)
        assert classes.tolist() == np.flatnonzero(expected).tolist()
        assert counts.tolist() == expected[expected > 0].tolist()
        want = np.bincount(ids[valid], weights=weights[valid], minlength=6)
        np.testing.assert_allclose(areas, want[expected > 0], rtol=1e-12)


def test_count_block_negative_and_widely_spread_ids():
    ids = np.array([[-1, -1, 0], [70000, 2_000_000_000, 0]], np.int64)
    classes, counts, areas = count_block(ids)
    assert classes.tolist() == [-1, 0, 70000, 2_000_000_000]
    assert counts.tolist() == [2, 2, 1, 1]
    assert areas.tolist() == [2.0, 2.0, 1.0, 1.0]
    empty = count_block(ids, np.zeros(ids.shape, bool))
    assert all(a.size == 0 for a in empty)


def test_count_block_refuses_float_ids_and_misshapen_areas():
    with pytest.raises(LabelError, match="float32"):
        count_block(np.zeros((2, 2), np.float32))
    with pytest.raises(InputError, match="do not fit"):
        count_block(np.zeros((2, 2), np.uint8), pixel_area=np.ones(3))


def test_tally_counts_zone_nodata_and_merges():
    ids = np.array([[1, 1, 2], [2, 2, 9]], np.uint8)
    valid = ids != 9
    where = np.array([[True, False, True], [True, True, True]])
    a, b = ClassTally(), ClassTally()
    a.add(ids, valid, 10.0, where)
    assert a.pixels == {1: 1, 2: 3} and a.nodata_pixels == 1
    assert a.area_m2 == 40.0
    b.add(ids, valid, 10.0)
    a.merge(b)
    assert a.pixels == {1: 3, 2: 6} and a.nodata_pixels == 2 and a.valid_pixels == 9


# --------------------------------------------------------------------------------------------
# pixel areas
# --------------------------------------------------------------------------------------------


def test_one_degree_cell_at_the_equator_is_pyprojs_geodesic_area():
    area = pixel_area_m2("EPSG:4326", (1.0, 0, 0.0, 0, -1.0, 1.0), 1)
    assert area.shape == (1,)
    assert area[0] == pytest.approx(ONE_DEGREE_AT_EQUATOR, rel=1e-12)
    south_up = pixel_area_m2("EPSG:4326", (1.0, 0, 0.0, 0, 1.0, 0.0), 1)
    assert south_up[0] == pytest.approx(ONE_DEGREE_AT_EQUATOR, rel=1e-12)


def test_pixel_area_agrees_with_polygon_areas_to_the_last_digit():
    import shapely

    t = (1e-4, 0.0, 10.0, 0.0, -1e-4, 45.0)
    rows = pixel_area_m2("EPSG:4326", t, 3)
    pixel = shapely.box(10.0, 45.0 - 3e-4, 10.0 + 1e-4, 45.0 - 2e-4)
    assert rows[2] == pytest.approx(polygon_areas_m2([pixel], "EPSG:4326")[0], rel=1e-12)
    assert rows[0] < rows[2]  # nearer the pole, smaller


def test_planar_pixel_area_uses_the_determinant_and_the_unit():
    assert pixel_area_m2("EPSG:32618", (10.0, 0, 0, 0, -10.0, 0), 5) == 100.0
    rotated = (8.0, 6.0, 0, 6.0, -8.0, 0)  # |det| = 100
    assert pixel_area_m2("EPSG:32618", rotated, 5) == pytest.approx(100.0)
    feet = pixel_area_m2("EPSG:2263", (1.0, 0, 0, 0, -1.0, 0), 5)  # US survey foot
    assert feet == pytest.approx((1200 / 3937) ** 2, rel=1e-9)
    assert pixel_area_m2(None, (2.0, 0, 0, 0, -3.0, 0), 5) == 6.0


def test_geographic_grids_that_cannot_have_row_areas_are_refused():
    with pytest.raises(InputError, match="rotated or sheared"):
        pixel_area_m2("EPSG:4326", (1e-3, 1e-4, 0, 1e-4, -1e-3, 10), 5)
    with pytest.raises(InputError, match="beyond the poles"):
        pixel_area_m2("EPSG:4326", (1.0, 0, 0, 0, -1.0, 95.0), 10)


# --------------------------------------------------------------------------------------------
# whole maps: synthetic and real
# --------------------------------------------------------------------------------------------


def test_block_size_changes_nothing_and_names_list_empty_classes(tmp_path):
    import rasterio

    rng = np.random.default_rng(1)
    data = rng.integers(0, 3, (50, 70)).astype(np.uint8)
    data[:5] = 255
    path = write_geotiff(tmp_path / "m.tif", data, nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(1, CLASS_NAMES=json.dumps(["a", "b", "c", "never"]))
    small, big = class_stats(path, block_size=7), class_stats(path)
    assert [r.pixels for r in small.rows()] == [r.pixels for r in big.rows()]
    rows = big.rows()
    assert [r.name for r in rows] == ["a", "b", "c", "never"]
    assert rows[3].pixels == 0 and rows[3].share == 0.0
    expected = np.bincount(data[data != 255], minlength=3)
    assert [r.pixels for r in rows[:3]] == expected.tolist()
    assert [r.area_m2 for r in rows[:3]] == (expected * 100.0).tolist()
    assert big.zones[0].tally.nodata_pixels == 5 * 70
    assert sum(r.share for r in rows) == pytest.approx(1.0)


def test_sen1floods11_geodesic_areas_match_pyproj(shared_data):
    path = needs(SEN1)
    data = read_all(path)
    rows = geod_row_areas(path)
    result = class_stats(path, nodata=[-1]).to_dict()
    zone = result["zones"][0]
    assert result["area_method"] == "geodesic" and result["crs"] == "EPSG:4326"
    assert zone["nodata_pixels"] == int((data == -1).sum())
    for cid in (0, 1):
        mine = by_id(zone)[cid]
        assert mine["pixels"] == int((data == cid).sum())
        want = float(((data == cid) * rows[:, None]).sum())
        assert mine["area_m2"] == pytest.approx(want, rel=1e-9)
        assert mine["area_ha"] == pytest.approx(want / 1e4, rel=1e-9)
    valid_area = float(((data != -1) * rows[:, None]).sum())  # independent total
    assert sum(c["area_m2"] for c in zone["classes"]) == pytest.approx(valid_area, rel=1e-12)
    assert zone["area_m2"] == pytest.approx(valid_area, rel=1e-12)


def test_sen1floods11_without_nodata_lists_minus_one_and_says_so(shared_data):
    result = class_stats(needs(SEN1))
    assert result.rows()[0].class_id == -1 and result.rows()[0].name == "class -1"
    assert any("--nodata -1" in n for n in result.notes)


def test_road_mask_255_is_a_class_there_is_no_nodata_tag(shared_data):
    path = needs(ROADS)
    data = read_all(path)
    result = class_stats(path, block_size=500)
    counts = np.bincount(data.ravel(), minlength=256)
    assert {r.class_id: r.pixels for r in result.rows()} == {0: counts[0], 255: counts[255]}
    assert result.nodata == []
    areas = geod_row_areas(path)
    road = float(((data == 255) * areas[:, None]).sum())
    assert result.rows()[1].area_m2 == pytest.approx(road, rel=1e-9)


@pytest.mark.integration
def test_cog_cmap_counts_equal_a_bincount_of_the_whole_array(shared_data):
    path = needs(COG_CMAP)
    data = read_all(path)
    counts = np.bincount(data.ravel(), minlength=256)
    result = class_stats(path)
    a = 1.1943285669558765
    got = {r.class_id: r.pixels for r in result.rows()}
    assert got == {c: int(counts[c]) for c in np.flatnonzero(counts) if c != 0}
    assert result.zones[0].tally.nodata_pixels == counts[0]
    for r in result.rows():
        assert r.area_m2 == pytest.approx(r.pixels * a * a, rel=1e-12)
    assert any("not equal-area" in n for n in result.notes)  # Web Mercator


# --------------------------------------------------------------------------------------------
# zonal statistics
# --------------------------------------------------------------------------------------------


def utm_map(tmp_path, nodata=255):
    """A 240x300 class map in EPSG:32618 at 30 m, and two EPSG:4326 polygons over it."""
    rng = np.random.default_rng(2)
    data = rng.integers(0, 4, (240, 300)).astype(np.uint8)
    data[:10, :10] = 255
    from rasterio.transform import from_origin

    grid = from_origin(500000.0, 4200000.0, 30.0, 30.0)
    path = write_geotiff(tmp_path / "utm.tif", data, nodata=nodata, transform=grid)
    # the map spans x 500000..509000, y 4192800..4200000 (about 75.0 W, 37.9..37.94 N)
    from pyproj import Transformer

    to_ll = Transformer.from_crs(32618, 4326, always_xy=True)
    ring = [
        to_ll.transform(x, y)
        for x, y in [(500500, 4193500), (506000, 4194200), (504000, 4199300), (500800, 4198000)]
    ]
    triangle = [[*map(list, ring), list(ring[0])]]
    tri2 = [
        to_ll.transform(x, y) for x, y in [(505000, 4195000), (508800, 4192900), (508900, 4199900)]
    ]
    second = [[*map(list, tri2), list(tri2[0])]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(feature_collection([triangle, second], names=["west", "east"]))
    return path, data, aoi


def reference_masks(path: Path, aoi: Path) -> list[np.ndarray]:
    """Each polygon rasterized over the whole grid, reprojected by GDAL (transform_geom)."""
    import rasterio
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    doc = json.loads(aoi.read_text())
    with rasterio.open(path) as src:
        out = []
        for feat in doc["features"]:
            geom = transform_geom("EPSG:4326", src.crs, feat["geometry"])
            out.append(rasterize([(geom, 1)], out_shape=src.shape, transform=src.transform) == 1)
    return out


def test_zonal_counts_match_an_independent_rasterization(tmp_path):
    path, data, aoi = utm_map(tmp_path)
    masks = reference_masks(path, aoi)
    result = class_stats(path, aoi, block_size=64, aoi_field="name")
    assert [z.zone for z in result.zones] == ["west", "east"]
    for zone, mask in zip(result.zones, masks, strict=True):
        inside = data[mask]
        want = np.bincount(inside[inside != 255], minlength=4)
        assert [zone.tally.pixels.get(c, 0) for c in range(4)] == want.tolist()
        assert zone.tally.nodata_pixels == int((inside == 255).sum())
        assert zone.tally.area_m2 == pytest.approx(want.sum() * 900.0)
    assert masks[0].sum() > 1000 and (masks[0] & masks[1]).any()  # overlapping zones


def test_zonal_reads_only_each_polygons_window(tmp_path, monkeypatch):
    from geoseg.run.class_stats import ClassMap

    path, _, aoi = utm_map(tmp_path)
    masks = reference_masks(path, aoi)
    reads = []
    original = ClassMap.read_ids

    def spy(self, row, col, height, width):
        reads.append((row, col, height, width))
        return original(self, row, col, height, width)

    monkeypatch.setattr(ClassMap, "read_ids", spy)
    class_stats(path, aoi, block_size=4096)
    assert len(reads) == 2
    for (row, col, height, width), mask in zip(reads, masks, strict=True):
        rr, cc = np.nonzero(mask)
        assert row <= rr.min() and rr.max() < row + height
        assert col <= cc.min() and cc.max() < col + width
        assert height * width < mask.size / 2


def test_zonal_on_a_geographic_map_uses_row_areas(shared_data, tmp_path):
    import rasterio
    from rasterio.features import rasterize

    path = needs(SEN1)
    aoi = tmp_path / "spain.geojson"
    aoi.write_text(feature_collection([box_ring(-0.775, 38.10, -0.76, 38.12)]))
    data, rows = read_all(path), geod_row_areas(path)
    with rasterio.open(path) as src:
        geom = json.loads(aoi.read_text())["features"][0]["geometry"]
        mask = rasterize([(geom, 1)], out_shape=src.shape, transform=src.transform) == 1
    zone = class_stats(path, aoi, nodata=[-1]).to_dict()["zones"][0]
    assert zone["zone"] == 0
    for cid in (0, 1):
        sel = mask & (data == cid)
        assert by_id(zone)[cid]["pixels"] == int(sel.sum())
        want = float((sel * rows[:, None]).sum())
        assert by_id(zone)[cid]["area_m2"] == pytest.approx(want, rel=1e-9)


@pytest.mark.integration
def test_zonal_on_cog_cmap_from_wgs84_polygons(shared_data, tmp_path):
    path = needs(COG_CMAP)
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        feature_collection(
            [
                box_ring(-79.44, 39.82, -79.40, 39.86),
                [[[-79.41, 39.81], [-79.37, 39.83], [-79.39, 39.875], [-79.41, 39.81]]],
            ]
        )
    )
    data, masks = read_all(path), reference_masks(path, aoi)
    result = class_stats(path, aoi)
    for zone, mask in zip(result.zones, masks, strict=True):
        inside = data[mask]
        want = np.bincount(inside, minlength=256)
        got = {c: n for c, n in zone.tally.pixels.items()}
        assert got == {c: int(want[c]) for c in np.flatnonzero(want) if c != 0}
        assert zone.tally.nodata_pixels == int(want[0])


def test_aoi_without_crs_is_taken_in_the_maps_crs_with_a_note(tmp_path):
    import pyogrio.raw
    import shapely

    path, data, _ = utm_map(tmp_path)
    shp = tmp_path / "local.shp"
    geom = shapely.box(501000, 4193000, 503000, 4196000)
    pyogrio.raw.write(
        shp,
        np.array([shapely.to_wkb(geom)], object),
        [],
        [],
        geometry_type="Polygon",
        driver="ESRI Shapefile",
        crs=None,
    )
    result = class_stats(path, shp)
    assert any("has no CRS" in n and "EPSG:32618" in n for n in result.notes)
    # pixel centres 500000 + 30 (c + 0.5) in 501000..503000: columns 33..99; likewise rows
    cols, rows_ = slice(33, 100), slice(133, 233)
    inside = data[rows_, cols]
    assert result.zones[0].tally.valid_pixels == int((inside != 255).sum())


def test_polygons_outside_the_map_count_zero_with_a_note(tmp_path):
    path, _, aoi = utm_map(tmp_path)
    doc = json.loads(aoi.read_text())
    doc["features"].append(
        json.loads(feature_collection([box_ring(10, 10, 11, 11)]))["features"][0]
    )
    aoi.write_text(json.dumps(doc))
    result = class_stats(path, aoi)
    assert result.zones[2].tally.valid_pixels == 0
    assert all(r.share is None for r in result.zone_rows(result.zones[2]))
    assert any("outside the class map" in n for n in result.notes)


def test_the_whole_map_is_read_once_in_blocks_of_block_size(tmp_path, monkeypatch):
    from geoseg.run.class_stats import ClassMap

    path, _, _ = utm_map(tmp_path)
    seen = np.zeros((240, 300), np.int64)
    original = ClassMap.read_ids

    def spy(self, row, col, height, width):
        assert height <= 64 and width <= 64
        seen[row : row + height, col : col + width] += 1
        return original(self, row, col, height, width)

    monkeypatch.setattr(ClassMap, "read_ids", spy)
    class_stats(path, block_size=64)
    assert (seen == 1).all()


def test_zarr_class_map_with_names(tmp_path):
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    data = np.random.default_rng(3).integers(0, 3, (40, 60)).astype(np.uint8)
    y, x = 4200000 - 10 * (np.arange(40) + 0.5), 500000 + 10 * (np.arange(60) + 0.5)
    da = xr.DataArray(data, dims=("y", "x"), coords={"y": y, "x": x})
    da.attrs["class_names"] = ["a", "b", "c", "d"]
    xr.Dataset({"classes": da}).rio.write_crs("EPSG:32618").to_zarr(tmp_path / "m.zarr")
    rows = class_stats(tmp_path / "m.zarr").rows()
    assert [(r.name, r.pixels) for r in rows] == [
        *zip("abc", np.bincount(data.ravel()).tolist(), strict=True),
        ("d", 0),
    ]
    assert rows[0].area_m2 == rows[0].pixels * 100.0


def test_notes_for_web_mercator_and_no_crs_go_to_stderr_unless_quiet(tmp_path):
    from rasterio.transform import from_origin

    merc = write_geotiff(
        tmp_path / "merc.tif",
        np.ones((20, 20), np.uint8),
        crs="EPSG:3857",
        transform=from_origin(-8843764.0, 4848553.0, 1.2, 1.2),
    )
    res = run_cli("stats", merc, "--no-progress")
    assert res.code == 0 and "note: areas are planar in EPSG:3857" in res.err
    assert "not equal-area" not in run_cli("stats", merc, "-q").err
    local = write_geotiff(tmp_path / "local.tif", np.ones((20, 20), np.uint8), crs=None)
    result = class_stats(local)
    assert result.crs is None and result.rows()[0].area_m2 == 400.0
    assert any("no CRS" in n and "one metre" in n for n in result.notes)


def test_block_size_out_of_range_is_refused(tmp_path):
    path, _, _ = utm_map(tmp_path)
    with pytest.raises(ConfigError, match="block_size 0"):
        class_stats(path, block_size=0)


# --------------------------------------------------------------------------------------------
# the CLI: table, --json, --csv
# --------------------------------------------------------------------------------------------


def test_cli_table_json_and_csv_agree(tmp_path):
    path, _, aoi = utm_map(tmp_path)
    js, cs = tmp_path / "s.json", tmp_path / "s.csv"
    res = run_cli("stats", path, "--aoi", aoi, "--json", js, "--csv", cs, "--no-progress")
    assert res.code == 0, res.err
    assert "zone 0" in res.out and "zone 1" in res.out and "total (valid)" in res.out
    doc = json.loads(js.read_text())
    assert doc == json.loads(class_stats(path, aoi).to_json())
    rows = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert len(rows) == 2 * 4 and rows[0]["zone"] == "0"
    for row in rows:
        zone = by_id(doc["zones"][int(row["zone"])])[int(row["class_id"])]
        assert int(row["pixels"]) == zone["pixels"]
        assert float(row["area_m2"]) == zone["area_m2"]
        assert float(row["share"]) == zone["share"]
    again = run_cli("stats", path, "--json", js, "--no-progress")
    assert again.code != 0 and "--overwrite" in again.err
    assert run_cli("stats", path, "--json", js, "--overwrite", "--no-progress").code == 0
    assert json.loads(js.read_text())["zones"][0]["zone"] is None


def test_cli_dash_writes_json_or_csv_to_stdout_alone(tmp_path):
    path, data, _ = utm_map(tmp_path)
    res = run_cli("stats", path, "--json", "-", "--no-progress")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["zones"][0]["pixels"] == int((data != 255).sum())
    res = run_cli("stats", path, "--csv", "-", "-q")
    assert res.code == 0 and res.out.splitlines()[0].startswith("zone,class_id")
    both = run_cli("stats", path, "--json", "-", "--csv", "-")
    assert both.code != 0 and "stdout" in both.err


# --------------------------------------------------------------------------------------------
# hostile inputs through the real CLI: one error line, nothing changed
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path):
    path, _, aoi = utm_map(tmp_path)
    w = {"map": path, "aoi": aoi, "root": tmp_path}
    w["float"] = write_geotiff(tmp_path / "float.tif", np.zeros((5, 5), np.float32))
    w["rgb"] = write_geotiff(tmp_path / "rgb.tif", np.zeros((3, 5, 5), np.uint8))
    w["nocrs"] = write_geotiff(tmp_path / "nocrs.tif", np.zeros((5, 5), np.uint8), crs=None)
    w["text"] = tmp_path / "notes.txt"
    w["text"].write_text("not polygons\n")
    w["empty"] = tmp_path / "empty.geojson"
    w["empty"].write_text('{"type": "FeatureCollection", "features": []}')
    lines = json.loads(aoi.read_text())
    lines["features"][1]["geometry"] = {
        "type": "LineString",
        "coordinates": [[-75, 37.9], [-74.9, 38]],
    }
    w["line"] = tmp_path / "line.geojson"
    w["line"].write_text(json.dumps(lines))
    w["far"] = tmp_path / "far.geojson"
    w["far"].write_text(feature_collection([box_ring(10, 10, 11, 11)]))
    w["table"] = tmp_path / "table.csv"
    w["table"].write_text("a,b\n1,2\n")
    w["existing"] = tmp_path / "old.json"
    w["existing"].write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "elsewhere.json")
    os.mkfifo(tmp_path / "pipe.gpkg")
    return w


def refused(root: Path, args: list, *words: str) -> None:
    before = snapshot(root)
    result = run_cli("stats", *args)
    assert_refused(result, before, snapshot(root), *words)


HOSTILE = {
    "missing class map": (
        lambda w: [w["root"] / "nope.tif"],
        ["class map", "nope.tif", "does not exist"],
    ),
    "float raster": (lambda w: [w["float"]], ["float.tif", "float32", "gdal_translate"]),
    "several bands": (lambda w: [w["rgb"]], ["rgb.tif", "3 bands", "-b 1"]),
    "aoi missing": (
        lambda w: [w["map"], "--aoi", w["root"] / "no.gpkg"],
        ["no.gpkg", "does not exist"],
    ),
    "aoi a fifo": (lambda w: [w["map"], "--aoi", w["root"] / "pipe.gpkg"], ["pipe.gpkg", "vector"]),
    "aoi not a vector": (
        lambda w: [w["map"], "--aoi", w["text"]],
        ["notes.txt", "not a readable vector"],
    ),
    "aoi is a raster": (lambda w: [w["map"], "--aoi", w["float"]], ["float.tif", "vector"]),
    "aoi empty": (lambda w: [w["map"], "--aoi", w["empty"]], ["empty.geojson", "no features"]),
    "aoi lines": (
        lambda w: [w["map"], "--aoi", w["line"]],
        ["line.geojson", "feature 1", "LineString"],
    ),
    "aoi without geometries": (
        lambda w: [w["map"], "--aoi", w["table"]],
        ["table.csv", "no geometries"],
    ),
    "aoi elsewhere": (lambda w: [w["map"], "--aoi", w["far"]], ["far.geojson", "overlaps", "CRS"]),
    "aoi on a map without crs": (
        lambda w: [w["nocrs"], "--aoi", w["aoi"]],
        ["no CRS", "gdal_edit"],
    ),
    "aoi field missing": (
        lambda w: [w["map"], "--aoi", w["aoi"], "--aoi-field", "nom"],
        ["nom", "fields: name"],
    ),
    "json is the class map": (
        lambda w: [w["map"], "--json", w["map"], "--overwrite"],
        ["utm.tif", "input"],
    ),
    "csv is the aoi": (
        lambda w: [w["map"], "--aoi", w["aoi"], "--csv", w["aoi"]],
        ["aoi.geojson", "input"],
    ),
    "json is a sidecar": (
        lambda w: [w["map"], "--json", f"{w['map']}.aux.xml"],
        ["utm.tif.aux.xml", "input"],
    ),
    "json through a link": (
        lambda w: [w["map"], "--json", w["root"] / "link.json", "--overwrite"],
        ["link.json", "link"],
    ),
    "json exists": (lambda w: [w["map"], "--json", w["existing"]], ["old.json", "--overwrite"]),
    "json and csv the same": (
        lambda w: [w["map"], "--json", w["root"] / "o", "--csv", w["root"] / "o"],
        ["same file"],
    ),
    "json in a missing folder": (
        lambda w: [w["map"], "--json", w["root"] / "no" / "s.json"],
        ["does not exist"],
    ),
    "block size zero": (
        lambda w: [w["map"], "--block-size", "0"],
        ["'--block-size'", "block_size 0"],
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_inputs_are_refused_in_one_line(ws, case):
    args, words = HOSTILE[case]
    refused(ws["root"], [*args(ws), "--no-progress"], *words)


def test_outputs_are_written_with_the_umask_mode(ws):
    out = ws["root"] / "s.json"
    old = os.umask(0o027)
    try:
        assert run_cli("stats", ws["map"], "--json", out, "--no-progress").code == 0
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o640
    assert math.isclose(
        sum(c["share"] for c in json.loads(out.read_text())["zones"][0]["classes"]), 1.0
    )


@pytest.mark.integration
def test_real_road_lines_are_no_zones(tmp_path):
    """SpaceNet's road centre lines (a real GeoJSON) as --aoi: refused in one line, by name."""
    lines = ROADS.parent / "sample_roads.geojson"
    if not lines.is_file():
        pytest.skip(f"real data file {lines} is absent")
    before = snapshot(tmp_path)
    res = run_cli("stats", ROADS, "--aoi", lines, "--json", tmp_path / "z.json")
    assert_refused(res, before, snapshot(tmp_path), "sample_roads.geojson", "LineString")
