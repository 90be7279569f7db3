"""Class-map writers: GeoTIFF, COG, Zarr, probabilities, atomicity, overwrite, no georeference."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geoseg.errors import InputError, OutputError, OutputExistsError
from geoseg.io.gdal_meta import category_names, pam_with_categories
from geoseg.io.writers import (
    OutputSpec,
    check_output,
    open_writer,
    probabilities_path,
    quantize_probs,
)

NAMES = ["water", "forest, wet", "urban"]
COLOURS = [(0, 0, 255), (0, 128, 0), (200, 200, 200)]
UTM = CRS.from_epsg(32618).to_wkt()
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)


def spec(height=300, width=200, **kw) -> OutputSpec:
    base = dict(
        height=height,
        width=width,
        crs_wkt=UTM,
        transform=TRANSFORM,
        georeferenced=True,
        class_names=NAMES,
        colours=COLOURS,
    )
    base.update(kw)
    return OutputSpec(**base)


def class_map(height, width, seed=0, k=3, nodata=255):
    rng = np.random.default_rng(seed)
    out = rng.integers(0, k, (height, width)).astype(np.uint8 if nodata == 255 else np.uint16)
    out[:7, :9] = nodata
    return out


def probs_for(classes, k=3, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.random((k, *classes.shape)).astype(np.float32)
    return p / p.sum(axis=0)


def write_blocks(writer, classes, probs=None, block=(70, 90), seed=0):
    """Write in shuffled, non-aligned blocks (each exactly once)."""
    h, w = classes.shape
    corners = [(r, c) for r in range(0, h, block[0]) for c in range(0, w, block[1])]
    np.random.default_rng(seed).shuffle(corners)
    for r, c in corners:
        sl = (slice(r, r + block[0]), slice(c, c + block[1]))
        writer.write(r, c, classes[sl], None if probs is None else probs[(slice(None), *sl)])


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------------------------
# GeoTIFF
# --------------------------------------------------------------------------------------------


def test_geotiff_round_trip(tmp_path):
    classes = class_map(600, 700)
    out = tmp_path / "map.tif"
    with open_writer(out, spec(600, 700)) as w:
        write_blocks(w, classes)
    assert leftovers(tmp_path) == []
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), classes)
        assert src.count == 1 and src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.crs == CRS.from_epsg(32618)
        assert tuple(src.transform)[:6] == TRANSFORM
        assert src.block_shapes == [(512, 512)] and src.is_tiled
        assert src.compression.name.upper() in {"ZSTD", "DEFLATE"}
        assert src.colorinterp == (ColorInterp.palette,)
        cmap = src.colormap(1)
        assert [cmap[i][:3] for i in range(3)] == COLOURS
        tags = src.tags(1)
        assert json.loads(tags["CLASS_NAMES"]) == NAMES
        assert json.loads(tags["CLASS_COLOURS"]) == [list(c) for c in COLOURS]
        assert src.descriptions == ("class",)


def test_geotiff_category_names_through_gdal(tmp_path):
    out = tmp_path / "cats.tif"
    with open_writer(out, spec(40, 30, block_size=16)) as w:
        w.write(0, 0, class_map(40, 30))
    assert (tmp_path / "cats.tif.aux.xml").exists()
    names = category_names(out)
    if names is None:
        pytest.skip("libgdal bundled with rasterio could not be loaded through ctypes")
    assert names == NAMES


def test_pam_keeps_existing_content():
    old = '<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="A">1</MDI></Metadata>'
    old += "<CategoryNames><Category>stale</Category></CategoryNames></PAMRasterBand></PAMDataset>"
    xml = pam_with_categories(["x", "y"], existing=old)
    assert "stale" not in xml and '<MDI key="A">1</MDI>' in xml
    assert xml.count("<Category>") == 2


def test_uint16_above_255_classes(tmp_path):
    k = 300
    s = spec(
        50,
        40,
        block_size=16,
        class_names=[f"c{i}" for i in range(k)],
        colours=[(i % 256, 0, 0) for i in range(k)],
    )
    assert s.dtype == "uint16" and s.nodata == 65535
    classes = class_map(50, 40, k=k, nodata=65535)
    with open_writer(tmp_path / "big.tif", s) as w:
        write_blocks(w, classes, block=(16, 16))
    with rasterio.open(tmp_path / "big.tif") as src:
        assert src.dtypes[0] == "uint16" and src.nodata == 65535
        np.testing.assert_array_equal(src.read(1), classes)


def test_probabilities_sidecar(tmp_path):
    classes = class_map(120, 90)
    probs = probs_for(classes)
    out = tmp_path / "p.tif"
    with open_writer(out, spec(120, 90, block_size=32, probabilities=True)) as w:
        write_blocks(w, classes, probs, block=(50, 40))
    side = probabilities_path(out)
    assert side.name == "p_probabilities.tif"
    with rasterio.open(side) as src:
        q = src.read()
        assert src.count == 3 and src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.descriptions == tuple(NAMES)
        assert src.crs == CRS.from_epsg(32618)
    valid = classes != 255
    np.testing.assert_array_equal(q[:, valid], np.rint(probs[:, valid] * 255).astype(np.uint8))
    assert (q[:, ~valid] == 255).all()
    assert leftovers(tmp_path) == []


def test_quantize_probs_pure():
    p = np.array([[[0.0, 0.5, 1.0]], [[1.0, 0.5, np.nan]]], np.float32)
    q = quantize_probs(p, np.array([[0, 1, 255]], np.uint8), 255)
    assert q.dtype == np.uint8
    assert q[:, 0, :2].tolist() == [[0, 128], [255, 128]] and (q[:, 0, 2] == 255).all()


def mode_of_quads(classes):
    """Where 3 or 4 of a 2x2 quad agree, the value a mode overview must hold."""
    h, w = classes.shape[0] // 2 * 2, classes.shape[1] // 2 * 2
    quads = (
        classes[:h, :w]
        .reshape(h // 2, 2, w // 2, 2)
        .transpose(0, 2, 1, 3)
        .reshape(h // 2, w // 2, 4)
    )
    top = np.apply_along_axis(lambda q: np.bincount(q, minlength=256).argmax(), 2, quads)
    count = (quads == top[..., None]).sum(axis=2)
    return top, count >= 3


def test_cog_with_mode_overviews(tmp_path):
    rng = np.random.default_rng(3)
    classes = (rng.integers(0, 2, (256, 192)) * 2).astype(np.uint8)  # 0/2: an average gives 1
    out = tmp_path / "cog.tif"
    # GDAL averages paletted rasters in colour space: with these greys the mean of classes 0
    # and 2 is exactly the colour of class 1, so any averaging shows up as a 1
    greys = [(0, 0, 0), (100, 100, 100), (200, 200, 200)]
    with open_writer(out, spec(256, 192, block_size=64, cog=True, colours=greys)) as w:
        write_blocks(w, classes, block=(100, 100))
    assert leftovers(tmp_path) == []
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.block_shapes == [(64, 64)]
        assert src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), classes)
        assert src.nodata == 255 and src.crs == CRS.from_epsg(32618)
        assert [src.colormap(1)[i][:3] for i in range(3)] == greys
        assert json.loads(src.tags(1)["CLASS_NAMES"]) == NAMES
    with rasterio.open(out, OVERVIEW_LEVEL=0) as ov:
        level1 = ov.read(1)
    assert level1.shape == (128, 96)
    assert set(np.unique(level1)) <= {0, 2}
    top, clear = mode_of_quads(classes)
    np.testing.assert_array_equal(level1[clear], top[clear])
    names = category_names(out)
    assert names is None or names == NAMES


# --------------------------------------------------------------------------------------------
# Zarr
# --------------------------------------------------------------------------------------------


def test_zarr_round_trip_with_crs_and_probabilities(tmp_path):
    import rioxarray  # noqa: F401
    import xarray as xr

    classes = class_map(130, 100)
    probs = probs_for(classes)
    out = tmp_path / "map.zarr"
    with open_writer(out, spec(130, 100, block_size=32, probabilities=True)) as w:
        write_blocks(w, classes, probs, block=(64, 64))
    assert leftovers(tmp_path) == []
    ds = xr.open_zarr(out)
    assert ds.rio.crs == CRS.from_epsg(32618)
    assert tuple(ds.rio.transform())[:6] == TRANSFORM
    assert ds["classes"].dtype == np.uint8
    assert ds["classes"].encoding["chunks"] == (32, 32)
    np.testing.assert_array_equal(ds["classes"].values, classes)
    assert ds["classes"].attrs["class_names"] == NAMES
    assert ds["classes"].attrs["class_colours"] == [list(c) for c in COLOURS]
    assert ds["classes"].rio.nodata == 255
    q = ds["probabilities"].values
    assert ds["probabilities"].dims == ("class", "y", "x") and q.dtype == np.uint8
    valid = classes != 255
    np.testing.assert_array_equal(q[:, valid], np.rint(probs[:, valid] * 255).astype(np.uint8))
    # pixel-centre coordinates
    assert float(ds.x[0]) == 500005.0 and float(ds.y[0]) == 4199995.0


def test_zarr_never_allocates_the_full_raster(tmp_path):
    import tracemalloc

    import zarr

    s = spec(60000, 50000, block_size=512)  # 3 GB as one uint8 array
    block = class_map(512, 512)
    tracemalloc.start()
    with open_writer(tmp_path / "huge.zarr", s) as w:
        w.write(1024, 2048, block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 200 * 2**20
    arr = zarr.open_array(tmp_path / "huge.zarr" / "classes", mode="r")
    np.testing.assert_array_equal(arr[1024:1536, 2048:2560], block)
    assert arr[0, 0] == 255  # unwritten chunks read as nodata


# --------------------------------------------------------------------------------------------
# atomicity, overwrite, checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.tif", "a.zarr"])
def test_exception_inside_with_leaves_nothing(tmp_path, name):
    out = tmp_path / name
    with pytest.raises(RuntimeError, match="boom"):
        with open_writer(out, spec(64, 64, block_size=16, probabilities=True)) as w:
            w.write(0, 0, class_map(32, 32), probs_for(class_map(32, 32)))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["a.tif", "a.zarr"])
def test_overwrite_refused_then_replaced(tmp_path, name):
    out = tmp_path / name
    first = class_map(32, 32, seed=1)
    with open_writer(out, spec(32, 32, block_size=16)) as w:
        w.write(0, 0, first)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_output(out, overwrite=False)
    with pytest.raises(OutputExistsError):
        open_writer(out, spec(32, 32, block_size=16))
    second = class_map(32, 32, seed=2)
    with open_writer(out, spec(32, 32, block_size=16), overwrite=True) as w:
        w.write(0, 0, second)
    if name.endswith(".tif"):
        with rasterio.open(out) as src:
            np.testing.assert_array_equal(src.read(1), second)
    else:
        import xarray as xr

        np.testing.assert_array_equal(xr.open_zarr(out)["classes"].values, second)
    assert leftovers(tmp_path) == []


def test_probabilities_sidecar_existing_and_stale(tmp_path):
    (tmp_path / "n_probabilities.tif").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="n_probabilities.tif"):
        check_output(tmp_path / "n.tif", overwrite=False, probabilities=True)
    assert check_output(tmp_path / "n.tif", overwrite=False) == "gtiff"
    out = tmp_path / "m.tif"
    c = class_map(32, 32)
    with open_writer(out, spec(32, 32, block_size=16, probabilities=True)) as w:
        w.write(0, 0, c, probs_for(c))
    assert probabilities_path(out).exists()
    with open_writer(out, spec(32, 32, block_size=16), overwrite=True) as w:
        w.write(0, 0, c)
    assert not probabilities_path(out).exists()  # it described the replaced class map


def test_check_output_errors(tmp_path, make_raster):
    with pytest.raises(InputError, match=r"\.tif \.tiff \.zarr"):
        check_output(tmp_path / "out.png", overwrite=False)
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "missing" / "out.tif", overwrite=False)
    src = make_raster(name="in.tif")
    with pytest.raises(InputError, match="would overwrite the input"):
        check_output(src, overwrite=True, inputs=[src])
    assert check_output(tmp_path / "x.TIFF", overwrite=False) == "gtiff"
    assert check_output(tmp_path / "x.zarr/", overwrite=False) == "zarr"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_output(locked / "o.tif", overwrite=False)
    finally:
        locked.chmod(0o700)


def test_bad_blocks_and_specs(tmp_path):
    with open_writer(tmp_path / "b.tif", spec(32, 32, block_size=16)) as w:
        with pytest.raises(InputError, match="does not fit"):
            w.write(20, 0, class_map(16, 16))
        w.write(0, 0, class_map(32, 32))
    with pytest.raises(InputError, match="probabilities"):
        with open_writer(tmp_path / "c.tif", spec(32, 32, block_size=16, probabilities=True)) as w:
            w.write(0, 0, class_map(32, 32), None)
    assert not (tmp_path / "c.tif").exists()
    with pytest.raises(InputError, match="multiple of 16"):
        spec(block_size=100)
    with pytest.raises(InputError, match="colours"):
        spec(colours=COLOURS[:2])


@pytest.mark.parametrize("name", ["plain.tif", "plain.zarr"])
def test_non_georeferenced_round_trip(tmp_path, name):
    s = spec(
        40, 30, block_size=16, crs_wkt=None, transform=(1.0, 0, 0, 0, 1.0, 0), georeferenced=False
    )
    classes = class_map(40, 30)
    out = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # writing must not warn
        with open_writer(out, s) as w:
            write_blocks(w, classes, block=(16, 16))
    if name.endswith(".tif"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(out) as src:
                assert src.crs is None
                assert tuple(src.transform)[:6] == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
                np.testing.assert_array_equal(src.read(1), classes)
    else:
        import rioxarray  # noqa: F401
        import xarray as xr

        ds = xr.open_zarr(out)
        assert ds.rio.crs is None and "spatial_ref" not in ds.coords
        np.testing.assert_array_equal(ds["classes"].values, classes)


def test_reader_reads_written_geotiff_back(tmp_path):
    from geoseg.io.raster import open_raster

    classes = class_map(64, 48)
    with open_writer(tmp_path / "m.tif", spec(64, 48, block_size=16)) as w:
        w.write(0, 0, classes)
    src = open_raster(tmp_path / "m.tif")
    assert src.info.crs_wkt and CRS.from_wkt(src.info.crs_wkt) == CRS.from_epsg(32618)
    data, valid = src.read(0, 0, 64, 48)
    np.testing.assert_array_equal(valid, classes != 255)
