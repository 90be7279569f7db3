"""What GIS users get from ``geoseg predict``: Zarr read as a raster, QGIS styles, names inside
the .tif, --co creation options, --nodata, and the confidence file (real CLI, tiny models)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import TINY as TINY_MODEL
from hostile import assert_refused, run_cli, snapshot

from geoseg.model.checkpoint import ModelMeta, build_model, default_colours, save_checkpoint
from geoseg.run.resume import partial_dir

OPTS = ["--tile", "32", "--overlap", "8", "--block-size", "32", "--no-progress"]


CKPT_TILE = 32  # the conftest ckpt fixture's tile


@pytest.fixture
def scene(make_raster):
    """A 96x64 scene whose top-left corner is nodata, so the class map has nodata pixels."""
    path = make_raster(height=96, width=64, name="scene.tif", nodata=0)
    with rasterio.open(path, "r+") as dst:
        data = dst.read()
        data[data == 0] = 1
        data[:, :20, :24] = 0
        dst.write(data)
    return path


def predict(*args):
    result = run_cli("predict", *map(str, args), *OPTS)
    assert result.code == 0, result.err
    return result


def read(path, band=None):
    with rasterio.open(path) as src:
        return src.read() if band is None else src.read(band)


def confident_checkpoint(path, classes=3):
    """A tiny model whose class-0 bias makes every pixel certain (p = 1 in float32)."""
    import torch

    meta = ModelMeta(
        arch="unet", encoder="resnet18", in_channels=3, classes=classes,
        class_names=[f"k{i}" for i in range(classes)], colours=default_colours(classes),
        mean=[0.5] * 3, std=[0.25] * 3, scale=255.0, tile_size=32, model_options=TINY_MODEL,
    )
    torch.manual_seed(0)
    model = build_model(meta)
    with torch.no_grad():
        model.segmentation_head[0].bias.copy_(torch.tensor([60.0] + [0.0] * (classes - 1)))
    return save_checkpoint(model, meta, path)


# --------------------------------------------------------------------------------------------
# Zarr as a raster
# --------------------------------------------------------------------------------------------


def test_zarr_reads_back_in_gdal_and_xarray_as_the_geotiff(tmp_path, scene, ckpt):
    import rioxarray  # noqa: F401
    import xarray as xr

    tif, store = tmp_path / "o.tif", tmp_path / "o.zarr"
    predict(scene, tif, "--model", ckpt, "--confidence")
    predict(scene, store, "--model", ckpt, "--confidence")
    expected = read(tif, 1)
    assert (expected == 255).any() and (expected != 255).any()
    for layer, other in (("classes", tif), ("confidence", tmp_path / "o_confidence.tif")):
        with rasterio.open(f'ZARR:"{store}":/{layer}') as z, rasterio.open(other) as t:
            np.testing.assert_array_equal(z.read(), t.read())
            assert z.crs == t.crs and z.crs is not None
            assert z.transform.almost_equals(t.transform)
            assert z.nodata == t.nodata and z.scales == t.scales
    for ds in (xr.open_zarr(store), xr.open_dataset(store, engine="zarr")):
        classes = ds["classes"].values
        np.testing.assert_array_equal(np.isnan(classes), expected == 255)
        np.testing.assert_array_equal(classes[expected != 255], expected[expected != 255])
        with rasterio.open(tif) as t:
            assert ds.rio.crs == t.crs and ds["classes"].rio.crs == t.crs
            assert ds.rio.transform().almost_equals(t.transform)
        decoded = ds["confidence"].values  # scale_factor 1/254 applied, nodata masked
        conf = read(tmp_path / "o_confidence.tif", 1)
        np.testing.assert_allclose(decoded[conf != 255], conf[conf != 255] / 254, rtol=1e-6)
        assert np.isnan(decoded[conf == 255]).all()


# --------------------------------------------------------------------------------------------
# QGIS and the legend
# --------------------------------------------------------------------------------------------


def test_qml_style_and_names_inside_the_tif(tmp_path, scene, ckpt):
    out = tmp_path / "o.tif"
    predict(scene, out, "--model", ckpt)
    root = ET.parse(tmp_path / "o.qml").getroot()
    entries = root.findall("pipe/rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    assert [(e.get("value"), e.get("label")) for e in entries] == [
        (str(i), f"c{i}") for i in range(4)
    ]
    assert [e.get("color") for e in entries] == [
        "#{:02x}{:02x}{:02x}".format(*c) for c in default_colours(4)
    ]
    Path(f"{out}.aux.xml").unlink()  # only the .tif copied elsewhere
    with rasterio.open(out) as src:
        assert json.loads(src.tags(1)["CLASS_NAMES"]) == [f"c{i}" for i in range(4)]
        assert src.colormap(1)[2][:3] == tuple(default_colours(4)[2])


# --------------------------------------------------------------------------------------------
# --co and --nodata
# --------------------------------------------------------------------------------------------


def test_creation_options_are_in_the_written_files(tmp_path, scene, ckpt):
    out = tmp_path / "o.tif"
    predict(scene, out, "--model", ckpt, "--probabilities", "--confidence", "--co",
            "COMPRESS=ZSTD", "--co", "blockxsize=32", "--co", "BLOCKYSIZE=16", "--co",
            "PREDICTOR=2")
    for path in (out, tmp_path / "o_probabilities.tif", tmp_path / "o_confidence.tif"):
        with rasterio.open(path) as src:
            assert src.profile["compress"] == "zstd", path
            assert (src.profile["blockxsize"], src.profile["blockysize"]) == (32, 16)
            assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
    # the same from a config file, for a COG
    cfg = tmp_path / "p.yaml"
    cfg.write_text("creation_options: {COMPRESS: DEFLATE, ZLEVEL: 9, BLOCKXSIZE: 16, "
                   "BLOCKYSIZE: 16}\ncog: true\n")
    cog = tmp_path / "cog.tif"
    predict(scene, cog, "--model", ckpt, "--config", cfg)
    with rasterio.open(cog) as src:
        assert src.profile["compress"] == "deflate" and src.block_shapes == [(16, 16)]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    np.testing.assert_array_equal(read(cog, 1), read(out, 1))


def test_nodata_option(tmp_path, scene, ckpt):
    ref, out = tmp_path / "ref.tif", tmp_path / "o.tif"
    predict(scene, ref, "--model", ckpt)
    predict(scene, out, "--model", ckpt, "--nodata", "200", "--confidence")
    with rasterio.open(out) as src:
        assert src.nodata == 200
        classes = src.read(1)
    expected = read(ref, 1)
    np.testing.assert_array_equal(classes, np.where(expected == 255, 200, expected))
    conf = read(tmp_path / "o_confidence.tif", 1)
    np.testing.assert_array_equal(conf == 255, classes == 200)


BAD = {
    "unknown_key": (["--co", "FOO=1"], ["FOO", "unknown GeoTIFF creation option"]),
    "lossy": (["--co", "COMPRESS=JPEG"], ["COMPRESS=JPEG", "lossless"]),
    "level": (["--co", "ZLEVEL=99"], ["ZLEVEL=99", "1 to 12"]),
    "photometric": (["--co", "PHOTOMETRIC=RGB"], ["PHOTOMETRIC", "paletted"]),
    "not_key_value": (["--co", "COMPRESS"], ["KEY=VALUE"]),
    "tile_vs_block": (["--co", "BLOCKXSIZE=64"], ["'--co'", "BLOCKXSIZE=64", "block_size 32"]),
    "zarr": (["--co", "COMPRESS=LZW", "@zarr"], ["Zarr", "--co"]),
    "nodata_is_a_class": (["--nodata", "3"], ["'--nodata'", "nodata 3", "class id", "4 to 255"]),
    "nodata_above_dtype": (["--nodata", "256"], ["'--nodata'", "nodata 256", "uint8", "4 to 255"]),
    "nodata_huge": (["--nodata", "70000"], ["'--nodata'", "nodata 70000", "0 to 65535"]),
    "nodata_negative": (["--nodata", "-1"], ["'--nodata'", "nodata -1", "0 to"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_co_or_nodata_is_one_line_and_writes_nothing(tmp_path, scene, ckpt, case):
    args, words = BAD[case]
    out = tmp_path / ("o.zarr" if "@zarr" in args else "o.tif")
    args = [a for a in args if a != "@zarr"]
    before = snapshot(tmp_path)
    result = run_cli("predict", scene, out, "--model", ckpt, *OPTS, *args)
    assert_refused(result, before, snapshot(tmp_path), *words)


# --------------------------------------------------------------------------------------------
# confidence
# --------------------------------------------------------------------------------------------


def test_confidence_is_the_max_of_the_probabilities(tmp_path, scene, ckpt):
    out = tmp_path / "o.tif"
    predict(scene, out, "--model", ckpt, "--probabilities", "--confidence")
    probs = read(tmp_path / "o_probabilities.tif")
    with rasterio.open(tmp_path / "o_confidence.tif") as src:
        conf = src.read(1)
        assert src.count == 1 and src.dtypes == ("uint8",) and src.nodata == 255
        assert src.scales == (1 / 254,) and src.tags()["CONFIDENCE_MEASURE"] == "probability"
    np.testing.assert_array_equal(conf, probs.max(axis=0))
    classes = read(out, 1)
    np.testing.assert_array_equal(conf == 255, classes == 255)
    assert conf[classes != 255].min() >= 254 // 4  # at least 1/C for C = 4 classes


@pytest.mark.parametrize("measure", ["entropy", "margin"])
def test_uncertainty_measures(tmp_path, scene, ckpt, measure):
    out = tmp_path / "o.tif"
    predict(scene, out, "--model", ckpt, "--probabilities", "--uncertainty", measure)
    with rasterio.open(tmp_path / "o_confidence.tif") as src:
        values = src.read(1)
        assert src.tags()["CONFIDENCE_MEASURE"] == measure
    valid = read(out, 1) != 255
    assert (values[~valid] == 255).all() and values[valid].max() <= 254
    p = read(tmp_path / "o_probabilities.tif")[:, valid].astype(np.float64) / 254
    if measure == "margin":
        top = np.sort(p, axis=0)
        expected = top[-1] - top[-2]
    else:
        p = p / p.sum(axis=0)
        expected = -(p * np.log(np.where(p > 0, p, 1))).sum(axis=0) / np.log(p.shape[0])
    # the file's value comes from the unrounded probabilities: a few 1/254 steps apart at most
    assert np.abs(values[valid] / 254 - expected).max() < 4 / 254


def test_a_certain_pixel_is_data_not_nodata(tmp_path, scene):
    model = confident_checkpoint(tmp_path / "sure.geoseg")
    out = tmp_path / "o.tif"
    predict(scene, out, "--model", model, "--probabilities", "--confidence")
    valid = read(out, 1) != 255
    conf = read(tmp_path / "o_confidence.tif", 1)
    probs = read(tmp_path / "o_probabilities.tif")
    assert (conf[valid] == 254).all() and (probs[0][valid] == 254).all()
    with rasterio.open(tmp_path / "o_confidence.tif") as src:
        masked = src.read(1, masked=True)
    assert not masked.mask[valid].any()  # a reader honouring nodata keeps every such pixel


# --------------------------------------------------------------------------------------------
# resume and --overwrite with the new files
# --------------------------------------------------------------------------------------------


def interrupted(monkeypatch, scene, out, ckpt, extra):
    """A run that failed after two of its three block rows were durable."""
    from geoseg.errors import OutputError
    from geoseg.io.writers import GeoTiffWriter

    real = GeoTiffWriter._write_block

    def failing(self, row, *rest):
        if row >= 64:
            raise OutputError("simulated failure")
        return real(self, row, *rest)

    with monkeypatch.context() as m:
        m.setattr(GeoTiffWriter, "_write_block", failing)
        result = run_cli("predict", scene, out, "--model", ckpt, *OPTS, *extra)
    assert result.code != 0 and "simulated failure" in result.err
    assert (partial_dir(out) / "confidence.tif").is_file()


@pytest.mark.parametrize("cog", [[], ["--cog"]])
def test_resume_with_confidence_is_bit_identical(tmp_path, monkeypatch, scene, ckpt, cog):
    extra = ["--confidence", "--probabilities", "--co", "COMPRESS=LZW", *cog]
    ref = tmp_path / "ref" / "o.tif"
    ref.parent.mkdir()
    predict(scene, ref, "--model", ckpt, *extra)
    out = tmp_path / "o.tif"
    interrupted(monkeypatch, scene, out, ckpt, extra)
    for changed in (["--uncertainty", "margin"], ["--nodata", "9"], ["--co", "COMPRESS=ZSTD"]):
        other = [*extra[:2], *changed] if changed[0] != "--co" else [*extra[:2], *changed, *cog]
        result = run_cli("predict", scene, out, "--model", ckpt, *OPTS, *other, "--resume")
        assert result.code != 0 and "different output" in result.err, (changed, result.err)
    result = run_cli("predict", scene, out, "--model", ckpt, *OPTS, *extra, "--resume")
    assert result.code == 0, result.err
    for name in ("o.tif", "o_probabilities.tif", "o_confidence.tif"):
        np.testing.assert_array_equal(read(tmp_path / name), read(ref.parent / name))
    assert (tmp_path / "o.qml").read_bytes() == (ref.parent / "o.qml").read_bytes()
    assert not partial_dir(out).exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_keeps_a_foreign_style_and_confidence(tmp_path, scene, ckpt, make_raster):
    out = tmp_path / "o.tif"
    (tmp_path / "o.qml").write_text("<qgis><pipe/></qgis>\n")  # the user's own style
    before = snapshot(tmp_path)
    result = run_cli("predict", scene, out, "--model", ckpt, *OPTS, "--overwrite")
    assert_refused(result, before, snapshot(tmp_path), "o.qml", "geoseg")
    (tmp_path / "o.qml").unlink()
    make_raster(height=16, width=16, name="o_confidence.tif")  # the user's raster
    before = snapshot(tmp_path)
    result = run_cli("predict", scene, out, "--model", ckpt, *OPTS, "--confidence", "--overwrite")
    assert_refused(result, before, snapshot(tmp_path), "o_confidence.tif", "geoseg")
    # without --confidence the user's file is left alone; geoseg's own stale one goes
    predict(scene, out, "--model", ckpt, "--overwrite")
    assert snapshot(tmp_path)["o_confidence.tif"] == before["o_confidence.tif"]
    (tmp_path / "o_confidence.tif").unlink()
    predict(scene, out, "--model", ckpt, "--confidence", "--overwrite")
    predict(scene, out, "--model", ckpt, "--overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "o.qml", "o.tif", "o.tif.aux.xml", "scene.tif"
    ]
