"""Class-map writers: GeoTIFF, COG, Zarr, probabilities, atomicity, overwrite, no georeference."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import rasterio
from gdal_oracle import category_names
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geoseg.core.confidence import confidence_map, quantize
from geoseg.errors import ConfigError, InputError, OutputError, OutputExistsError
from geoseg.io.gdal import pam_with_categories
from geoseg.io.qgis import is_geoseg_style, qml_style, style_path
from geoseg.io.writers import (
    OutputSpec,
    check_creation_options,
    check_output,
    cog_options,
    confidence_path,
    geoseg_output_kind,
    gtiff_profile_options,
    open_writer,
    probabilities_path,
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
    np.testing.assert_array_equal(q[:, valid], np.rint(probs[:, valid] * 254).astype(np.uint8))
    assert (q[:, ~valid] == 255).all()
    assert leftovers(tmp_path) == []
    with rasterio.open(side) as src:  # the encoding is declared where GDAL users look
        assert src.scales == (1 / 254,) * 3 and src.offsets == (0.0,) * 3
        assert "254" in src.tags()["QUANTIZATION"]


def test_quantize_probs_pure():
    p = np.array([[[0.0, 0.5, 1.0]], [[1.0, 0.5, np.nan]]], np.float32)
    q = quantize(p, np.array([[0, 1, 255]], np.uint8), 255)
    assert q.dtype == np.uint8
    # a certain pixel (p = 1) is 254: data, never the nodata value 255
    assert q[:, 0, :2].tolist() == [[0, 127], [254, 127]] and (q[:, 0, 2] == 255).all()
    sure = quantize(np.full((1, 1, 1), 0.999), np.zeros((1, 1), np.uint8), 255)
    assert sure[0, 0, 0] == 254


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
    ds = xr.open_zarr(out, mask_and_scale=False)
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
    np.testing.assert_array_equal(q[:, valid], np.rint(probs[:, valid] * 254).astype(np.uint8))
    # decoded (xarray's default): nodata masked, probabilities scaled back to [0, 1]
    decoded = xr.open_zarr(out)
    assert np.isnan(decoded["classes"].values[~valid]).all()
    np.testing.assert_allclose(decoded["probabilities"].values[:, valid], probs[:, valid],
                               atol=0.5 / 254 + 1e-6)
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

        np.testing.assert_array_equal(xr.open_zarr(out, mask_and_scale=False)["classes"], second)
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

        ds = xr.open_zarr(out, mask_and_scale=False)
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



# --------------------------------------------------------------------------------------------
# what GIS tools read: names inside the .tif, the QGIS style, GDAL's Zarr driver
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cog", [False, True])
def test_class_names_stay_in_the_tif_without_its_sidecar(tmp_path, cog):
    out = tmp_path / "m.tif"
    with open_writer(out, spec(64, 48, block_size=16, cog=cog)) as w:
        w.write(0, 0, class_map(64, 48))
    (tmp_path / "m.tif.aux.xml").unlink()  # the .tif copied alone
    with rasterio.open(out) as src:
        assert json.loads(src.tags(1)["CLASS_NAMES"]) == NAMES
        assert [src.colormap(1)[i][:3] for i in range(3)] == COLOURS
    assert geoseg_output_kind(out) == "classes"


def test_qml_style_beside_the_class_map(tmp_path):
    import xml.etree.ElementTree as ET

    out = tmp_path / "m.tif"
    with open_writer(out, spec(32, 32, block_size=16)) as w:
        w.write(0, 0, class_map(32, 32))
    qml = tmp_path / "m.qml"
    assert style_path(out) == qml and leftovers(tmp_path) == []
    root = ET.parse(qml).getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert root.tag == "qgis" and renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [e.get("value") for e in entries] == ["0", "1", "2"]
    assert [e.get("label") for e in entries] == NAMES
    assert [e.get("color") for e in entries] == ["#0000ff", "#008000", "#c8c8c8"]
    assert {e.get("alpha") for e in entries} == {"255"}
    assert geoseg_output_kind(qml) == "style" and is_geoseg_style(qml)


def test_qml_text_is_escaped_and_foreign_styles_are_not_ours(tmp_path):
    import xml.etree.ElementTree as ET

    text = qml_style(['a "b" <c> & d', "tab\there", "bell\x07"], [(1, 2, 3)] * 3)
    labels = [e.get("label") for e in ET.fromstring(text.split("\n", 1)[1]).iter("paletteEntry")]
    assert labels == ['a "b" <c> & d', "tab\there", "bell?"]
    user = tmp_path / "user.qml"
    user.write_text(text.replace("geoseg/output", "someone/else"))
    assert not is_geoseg_style(user)
    bomb = tmp_path / "bomb.qml"
    bomb.write_text('<!DOCTYPE qgis [<!ENTITY a "aaaa">]><qgis>&a;</qgis>')
    assert not is_geoseg_style(bomb)
    (tmp_path / "bad.qml").write_bytes(b"\xff\xfe not xml")
    assert not is_geoseg_style(tmp_path / "bad.qml")


def test_overwrite_never_replaces_a_foreign_style(tmp_path):
    out = tmp_path / "m.tif"
    (tmp_path / "m.qml").write_text("<qgis><pipe/></qgis>")  # the user's own style
    with pytest.raises(OutputExistsError, match="m.qml"):
        check_output(out, overwrite=False)
    with pytest.raises(OutputError, match="QGIS style geoseg wrote"):
        check_output(out, overwrite=True)
    (tmp_path / "m.qml").unlink()
    with open_writer(out, spec(32, 32, block_size=16)) as w:
        w.write(0, 0, class_map(32, 32))
    with open_writer(out, spec(32, 32, block_size=16), overwrite=True) as w:  # ours: replaced
        w.write(0, 0, class_map(32, 32, seed=3))
    assert is_geoseg_style(tmp_path / "m.qml") and leftovers(tmp_path) == []


def test_zarr_is_a_raster_for_gdal_with_the_geotiffs_georeference(tmp_path):
    classes = class_map(130, 100)
    s = spec(130, 100, block_size=32, confidence="probability")
    conf = quantize(probs_for(classes).max(axis=0), classes, 255)
    for name in ("m.tif", "m.zarr"):
        with open_writer(tmp_path / name, s) as w:
            w.write(0, 0, classes, confidence=conf)
    assert json.loads((tmp_path / "m.zarr" / ".zgroup").read_text())["zarr_format"] == 2
    zattrs = json.loads((tmp_path / "m.zarr" / "classes" / ".zattrs").read_text())
    assert zattrs["grid_mapping"] == "spatial_ref" and zattrs["_ARRAY_DIMENSIONS"] == ["y", "x"]
    for layer, tif in (("classes", "m.tif"), ("confidence", "m_confidence.tif")):
        with rasterio.open(f'ZARR:"{tmp_path / "m.zarr"}":/{layer}') as z:
            with rasterio.open(tmp_path / tif) as t:
                np.testing.assert_array_equal(z.read(), t.read())
                assert z.crs == t.crs == CRS.from_epsg(32618)
                assert z.transform.almost_equals(t.transform)
                assert z.nodata == t.nodata == 255 and z.scales == t.scales
    assert geoseg_output_kind(tmp_path / "m.zarr") == "zarr"


def test_a_single_array_store_opens_as_a_raster_everywhere(tmp_path):
    import rioxarray  # noqa: F401
    import xarray as xr

    from geoseg.io.raster import open_raster

    classes = class_map(64, 48)
    out = tmp_path / "m.zarr"
    with open_writer(out, spec(64, 48, block_size=16)) as w:
        w.write(0, 0, classes)
    with rasterio.open(out) as src:  # the store itself, no ZARR: prefix
        np.testing.assert_array_equal(src.read(1), classes)
        assert src.crs == CRS.from_epsg(32618) and src.nodata == 255
    for ds in (xr.open_zarr(out), xr.open_dataset(out, engine="zarr")):
        assert ds.rio.crs == CRS.from_epsg(32618) and ds["classes"].rio.crs is not None
        np.testing.assert_array_equal(np.isnan(ds["classes"].values), classes == 255)
    info = open_raster(out).info  # geoseg reads its own store back
    assert (info.kind, info.nodata, info.count) == ("zarr", 255.0, 1)
    assert tuple(info.transform) == TRANSFORM


def test_an_earlier_zarr_v3_store_is_still_recognised(tmp_path):
    store = tmp_path / "old.zarr" / "classes"
    store.mkdir(parents=True)
    (store / "zarr.json").write_text(json.dumps({"attributes": {"class_names": NAMES}}))
    assert geoseg_output_kind(tmp_path / "old.zarr") == "zarr"
    (store / "zarr.json").write_text(json.dumps({"attributes": {"other": 1}}))
    assert geoseg_output_kind(tmp_path / "old.zarr") is None


# --------------------------------------------------------------------------------------------
# confidence, nodata, creation options
# --------------------------------------------------------------------------------------------


def test_confidence_measures_pure():
    p = np.array([[[1.0, 0.5, 1 / 3]], [[0.0, 0.5, 1 / 3]], [[0.0, 0.0, 1 / 3]]], np.float32)
    np.testing.assert_allclose(confidence_map(p, "probability")[0], [1.0, 0.5, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(confidence_map(p, "margin")[0], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(
        confidence_map(p, "entropy")[0], [0.0, np.log(2) / np.log(3), 1.0], atol=1e-6
    )
    one = np.ones((1, 2, 2), np.float32)
    assert (confidence_map(one, "entropy") == 0).all()
    assert (confidence_map(one, "margin") == 1).all()
    rng = np.random.default_rng(0)
    q = rng.random((5, 70, 33)).astype(np.float32)
    q /= q.sum(axis=0)
    for measure in ("probability", "margin", "entropy"):
        m = confidence_map(q, measure, chunk_rows=8)
        assert m.shape == (70, 33) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    with pytest.raises(ValueError, match="unknown"):
        confidence_map(q, "variance")


def test_confidence_layer_file(tmp_path):
    classes = class_map(40, 30)
    conf = quantize(probs_for(classes).max(axis=0), classes, 255)
    out = tmp_path / "c.tif"
    with open_writer(out, spec(40, 30, block_size=16, confidence="margin")) as w:
        with pytest.raises(InputError, match="uint8"):
            w.write(0, 0, classes, confidence=conf.astype(np.float32))
        w.write(0, 0, classes, confidence=conf)
    side = confidence_path(out)
    assert side.name == "c_confidence.tif" and geoseg_output_kind(side) == "confidence"
    with rasterio.open(side) as src:
        np.testing.assert_array_equal(src.read(1), conf)
        assert src.count == 1 and src.nodata == 255 and src.scales == (1 / 254,)
        assert src.tags()["CONFIDENCE_MEASURE"] == "margin" and src.crs == CRS.from_epsg(32618)
    # a class map without confidence replaces geoseg's stale confidence, never a foreign file
    with open_writer(out, spec(40, 30, block_size=16), overwrite=True) as w:
        w.write(0, 0, classes)
    assert not side.exists() and leftovers(tmp_path) == []
    side.write_text("the user's notes")
    with pytest.raises(OutputError, match="confidence file geoseg wrote"):
        check_output(out, overwrite=True, confidence=True)
    with open_writer(out, spec(40, 30, block_size=16), overwrite=True) as w:
        w.write(0, 0, classes)
    assert side.read_text() == "the user's notes"


def test_nodata_value_and_its_checks(tmp_path):
    classes = class_map(32, 32, nodata=255)
    classes[classes == 255] = 9
    out = tmp_path / "n.tif"
    with open_writer(out, spec(32, 32, block_size=16, nodata_value=9, probabilities=True)) as w:
        w.write(0, 0, classes, probs_for(classes))
    with rasterio.open(out) as src:
        assert src.nodata == 9
        np.testing.assert_array_equal(src.read(1), classes)
    with rasterio.open(probabilities_path(out)) as src:
        assert (src.read()[:, classes == 9] == 255).all()  # masked where the map is nodata
    with pytest.raises(ConfigError, match=r"nodata 2 is a class id .* from 3 to 255"):
        spec(nodata_value=2)
    with pytest.raises(ConfigError, match=r"nodata 256 does not fit the uint8"):
        spec(nodata_value=256)


def test_zstd_level_defaults_to_the_fast_one_and_the_users_level_wins():
    from geoseg.io.gdal import best_compression

    if best_compression() != "ZSTD":
        pytest.skip("this GDAL has no ZSTD: geoseg falls back to DEFLATE at GDAL's level")
    assert gtiff_profile_options(spec())["ZSTD_LEVEL"] == "1"
    assert cog_options(spec(), "mode")["LEVEL"] == "1"
    mine = spec(creation_options={"ZSTD_LEVEL": "9"})
    assert gtiff_profile_options(mine)["ZSTD_LEVEL"] == "9"
    assert "ZSTD_LEVEL" not in gtiff_profile_options(spec(creation_options={"COMPRESS": "LZW"}))


def test_check_creation_options():
    got = check_creation_options(
        {"compress": "zstd", " zstd_level ": 9, "BLOCKXSIZE": "0256", "NUM_THREADS": "all_cpus"},
        block_size=2048,
    )
    assert got == {"COMPRESS": "ZSTD", "ZSTD_LEVEL": "9", "BLOCKXSIZE": "256",
                   "NUM_THREADS": "ALL_CPUS"}
    bad = {
        "FOO=1": ({"FOO": "1"}, "unknown GeoTIFF creation option"),
        "JPEG": ({"COMPRESS": "JPEG"}, "COMPRESS must be one of NONE"),
        "ZLEVEL": ({"ZLEVEL": "99"}, "ZLEVEL must be a DEFLATE level"),
        "PREDICTOR": ({"PREDICTOR": "3"}, "PREDICTOR must be 1"),
        "bool": ({"BIGTIFF": True}, "BIGTIFF must be one of"),
        "tile": ({"BLOCKXSIZE": "100"}, "multiple of 16"),
        "photometric": ({"PHOTOMETRIC": "RGB"}, "is refused: class maps are always paletted"),
        "tiled": ({"TILED": "NO"}, "is refused"),
        "divide": ({"BLOCKYSIZE": "768"}, "does not divide block_size 2048"),
    }
    for case, (opts, words) in bad.items():
        with pytest.raises(ConfigError, match=words) as err:
            check_creation_options(opts, block_size=2048)
        assert "\n" not in str(err.value), case
    with pytest.raises(ConfigError, match="square tiles"):
        check_creation_options({"BLOCKXSIZE": "256"}, block_size=2048, cog=True)


@pytest.mark.parametrize("cog", [False, True])
def test_creation_options_reach_the_files(tmp_path, cog):
    opts = {"COMPRESS": "DEFLATE", "ZLEVEL": "9", "PREDICTOR": "2", "BLOCKXSIZE": "32",
            "BLOCKYSIZE": "32" if cog else "16"}
    classes = class_map(64, 64)
    out = tmp_path / "o.tif"
    s = spec(64, 64, creation_options=opts, cog=cog, probabilities=True)
    with open_writer(out, s) as w:
        w.write(0, 0, classes, probs_for(classes))
    for path in (out, probabilities_path(out)):
        with rasterio.open(path) as src:
            assert src.compression.name.upper() == "DEFLATE"
            assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
            assert src.block_shapes[0] == ((32, 32) if cog else (16, 32))
        if cog:
            with rasterio.open(path) as src:
                assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), classes)


def test_creation_options_are_refused_for_zarr(tmp_path):
    with pytest.raises(ConfigError, match="GeoTIFF creation option .* Zarr store"):
        check_output(tmp_path / "o.zarr", overwrite=False, creation_options={"COMPRESS": "LZW"})


# --------------------------------------------------------------------------------------------
# Durable block rows (--resume): flushed in place, checked once, else reopened
# --------------------------------------------------------------------------------------------


def write_by_block_rows(out, partial, classes, block=64, flush=True):
    """Write whole block rows through a resumable writer (``partial``: its partial folder).

    The blocks are wider than the files' 32 px tiles, as predict's are.
    """
    from geoseg.io.writers import GeoTiffWriter

    s = spec(*classes.shape, block_size=32)
    with GeoTiffWriter(out, s, False, partial_dir=partial) as writer:
        for r in range(0, classes.shape[0], block):
            for c in range(0, classes.shape[1], block):
                sl = (slice(r, r + block), slice(c, c + block))
                writer.write(r, c, classes[sl])
            if flush:
                writer.flush()
            writer.take_row_digest()
    return writer


def tile_sizes(path):
    with rasterio.open(path) as src:
        rows, cols = (-(-n // b) for n, b in zip(src.shape, src.block_shapes[0], strict=True))
        return [src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)
                for r in range(rows) for c in range(cols)]  # fmt: skip


def test_flushed_block_rows_keep_the_compression_level_of_a_file_written_at_once(tmp_path):
    """GDAL applies ZSTD_LEVEL only at creation: reopening after each row would lose it."""
    classes = class_map(256, 192)
    (tmp_path / "p").mkdir()
    writer = write_by_block_rows(tmp_path / "flushed.tif", tmp_path / "p", classes)
    write_by_block_rows(tmp_path / "once.tif", None, classes, flush=False)
    assert writer._checked and writer._in_place is not None  # flushed in place, read back once
    assert tile_sizes(tmp_path / "flushed.tif") == tile_sizes(tmp_path / "once.tif")
    with rasterio.open(tmp_path / "flushed.tif") as src:
        np.testing.assert_array_equal(src.read(1), classes)


def test_a_flush_that_does_not_reach_the_disk_falls_back_to_reopening(tmp_path, monkeypatch):
    """A GDAL whose in-place flush leaves the rows unreadable is caught by the read-back."""
    import geoseg.io.gdal as gdal

    monkeypatch.setattr(gdal, "flush_in_place", lambda handle: True)  # claims, does nothing
    classes = class_map(192, 130)
    (tmp_path / "p").mkdir()
    writer = write_by_block_rows(tmp_path / "o.tif", tmp_path / "p", classes)
    assert writer._in_place is None and not writer._checked
    with rasterio.open(tmp_path / "o.tif") as src:
        np.testing.assert_array_equal(src.read(1), classes)


KILLED_WRITER = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_io_writers import class_map, probs_for, spec
from geoseg.io.writers import GeoTiffWriter

classes = class_map(320, 200)
probs = probs_for(classes)
writer = GeoTiffWriter({out!r}, spec(320, 200, block_size=64, probabilities=True), False,
                       partial_dir=__import__("pathlib").Path({partial!r}))
for r in range(0, 192, 64):
    for c in range(0, 200, 64):
        sl = (slice(r, r + 64), slice(c, c + 64))
        writer.write(r, c, classes[sl], probs[(slice(None), *sl)])
    writer.flush()
    print(writer.take_row_digest(), flush=True)
writer.write(192, 0, classes[192:256, :64], probs[:, 192:256, :64])  # not flushed
assert writer._checked  # the rows were flushed in place, not by reopening
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_flushed_block_rows_survive_a_sigkill_of_the_writer(tmp_path):
    """What --resume trusts: every flushed row reads back, from the files, with its digest."""
    import subprocess
    import sys
    from pathlib import Path

    from geoseg.io.writers import partial_files, rows_digest

    (tmp_path / "p").mkdir()
    code = KILLED_WRITER.format(
        tests=str(Path(__file__).parent), out=str(tmp_path / "o.tif"), partial=str(tmp_path / "p")
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    digests = done.stdout.split()
    assert len(digests) == 3
    files = partial_files(tmp_path / "p", True, False)
    for i, digest in enumerate(digests):
        assert rows_digest(files, 64 * i, 64 * (i + 1), 64) == digest
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_dataset_handle_is_found_only_for_an_open_dataset(tmp_path):
    from geoseg.io.gdal import dataset_handle, flush_in_place

    path = tmp_path / "d.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1,
                       dtype="uint8") as dst:  # fmt: skip
        handle = dataset_handle(dst)
        assert handle is not None and flush_in_place(handle)
    assert dataset_handle(dst) is None


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_libgdal_is_rasterios_even_when_another_gdal_is_found_first(tmp_path, monkeypatch):
    """pyogrio bundles its own libgdal; its handles and options are not rasterio's."""
    import ctypes

    import geoseg.io.gdal as gdal

    pytest.importorskip("pyogrio")  # loads its own libgdal, if it bundles one
    others = [
        c for c in dict.fromkeys(gdal._libgdal_candidates())
        if os.path.isfile(c) and not gdal._is_rasterios(ctypes.CDLL(c))
    ]  # fmt: skip
    if not others:
        pytest.skip("no second libgdal in this environment (pyogrio bundles one on PyPI wheels)")
    mine = gdal.libgdal()
    monkeypatch.setattr(gdal, "_libgdal_candidates", lambda: [*others, mine._name])
    gdal.libgdal.cache_clear()
    try:
        assert gdal.libgdal()._name == mine._name
        with rasterio.open(tmp_path / "d.tif", "w", driver="GTiff", width=8, height=8,
                           count=1, dtype="uint8") as dst:  # fmt: skip
            assert gdal.dataset_handle(dst) is not None
    finally:
        gdal.libgdal.cache_clear()
