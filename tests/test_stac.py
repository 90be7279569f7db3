"""STAC inputs: an item's single-band assets stacked (VRT), checked, scaled and predicted."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from hostile import run_cli, snapshot

from geoseg.errors import AlignmentError, ConfigError, InputError
from geoseg.io import stac
from geoseg.io.raster import ScaledSource, open_input, open_raster, raster_files

COLOURS = ("red", "green", "blue")
KEYS = ("B04", "B03", "B02")


@pytest.fixture(scope="module")
def rgb(shared_data):
    return shared_data / "rasters" / "RGB.byte.tif"


def split_bands(rgb, folder, window=None, shift=0.0):
    """Write each band of ``rgb`` as a single-band GeoTIFF in ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(rgb) as src:
        data = src.read(window=window)
        prof = src.profile
        transform = src.window_transform(window) if window else src.transform
    prof.update(count=1, height=data.shape[1], width=data.shape[2], interleave="band")
    prof.update(transform=transform @ Affine.translation(shift, 0))
    paths = []
    for key, band in zip(KEYS, data, strict=True):
        path = folder / f"{key}.tif"
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(band, 1)
        paths.append(path)
    return paths


def make_item(item_id, hrefs, scale=None, offset=None):
    """A STAC item with one asset per href, keyed B04/B03/B02, common names red/green/blue."""
    item = pystac.Item(
        id=item_id,
        geometry=None,
        bbox=None,
        datetime=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        properties={},
    )
    for key, name, href in zip(KEYS, COLOURS, hrefs, strict=True):
        raster = {"data_type": "uint8"}
        if scale is not None:
            raster.update(scale=scale, offset=offset or 0.0)
        fields = {"eo:bands": [{"name": key, "common_name": name}], "raster:bands": [raster]}
        item.add_asset(
            key,
            pystac.Asset(str(href), media_type=pystac.MediaType.GEOTIFF, extra_fields=fields),
        )
    item.add_asset("thumbnail", pystac.Asset("thumb.png", roles=["thumbnail"]))
    return item


def write_item(path, item):
    path.write_text(json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False)))
    return path


@pytest.fixture
def item_file(tmp_path, rgb):
    split_bands(rgb, tmp_path / "assets")
    hrefs = [f"assets/{k}.tif" for k in KEYS]  # relative to the item file
    return write_item(tmp_path / "item.json", make_item("scene-1", hrefs))


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile


def test_stack_reads_like_the_rgb_file(item_file, rgb):
    with open_raster(rgb) as ref, open_input(item_file, assets=list(KEYS)) as got:
        assert got.info.path == str(item_file)
        assert (got.info.height, got.info.width, got.info.count) == (718, 791, 3)
        assert got.info.crs_wkt == ref.info.crs_wkt and got.info.transform == ref.info.transform
        for window in ((0, 0, 718, 791), (-10, 700, 64, 128)):
            a, b = got.read(*window), ref.read(*window)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_common_names_resolve_and_the_vrt_is_a_private_temporary(item_file):
    before = snapshot(item_file.parent)
    source = open_input(item_file, assets=["red", "green", "blue"])
    vrt = Path(source._inner._path)
    assert vrt.is_file() and Path(tempfile.gettempdir()) in vrt.parents
    assert snapshot(item_file.parent) == before  # nothing beside the inputs
    source.close()
    assert not vrt.parent.exists()


def test_predict_item_equals_predicting_the_rgb_file(tmp_path, item_file, rgb, ckpt):
    want, got = tmp_path / "rgb.tif", tmp_path / "stac.tif"
    assert run_cli("predict", rgb, want, "--model", ckpt, "--device", "cpu").code == 0
    res = run_cli("predict", item_file, got, "--model", ckpt, "--assets", "B04,B03,B02")
    assert res.code == 0, res.err
    a, pa = _read(got)
    b, pb = _read(want)
    np.testing.assert_array_equal(a, b)
    assert pa["transform"] == pb["transform"] and pa["crs"] == pb["crs"]


def test_without_assets_the_error_lists_the_raster_assets(tmp_path, item_file, ckpt):
    before = snapshot(tmp_path)
    res = run_cli("predict", item_file, tmp_path / "o.tif", "--model", ckpt)
    assert res.code != 0 and len(res.error_lines) == 1, res.err
    assert "--assets" in res.err and "B04, B03, B02" in res.err and "thumbnail" not in res.err
    assert snapshot(tmp_path) == before


def test_an_unknown_asset_is_refused_with_the_keys(item_file):
    with pytest.raises(InputError, match=r"no raster asset or band 'nir'.*B04, B03, B02"):
        open_input(item_file, assets=["B04", "nir"])


def test_assets_on_other_grids_are_refused_naming_the_asset(tmp_path, rgb):
    split_bands(rgb, tmp_path / "a")
    shifted = split_bands(rgb, tmp_path / "b", shift=1.0)
    cropped = split_bands(rgb, tmp_path / "c", window=((0, 100), (0, 100)))
    hrefs = [tmp_path / "a" / "B04.tif", shifted[1], tmp_path / "a" / "B02.tif"]
    item = write_item(tmp_path / "shifted.json", make_item("s", hrefs))
    with pytest.raises(AlignmentError, match=r"asset 'B03' of item s has transform"):
        open_input(item, assets=list(KEYS))
    hrefs = [tmp_path / "a" / "B04.tif", tmp_path / "a" / "B03.tif", cropped[2]]
    item = write_item(tmp_path / "cropped.json", make_item("c", hrefs))
    with pytest.raises(AlignmentError, match=r"asset 'B02' of item c has size 100x100"):
        open_input(item, assets=list(KEYS))


def test_raster_bands_scale_and_offset_apply_and_flags_override(tmp_path, rgb):
    split_bands(rgb, tmp_path / "assets")
    hrefs = [f"assets/{k}.tif" for k in KEYS]
    item = write_item(tmp_path / "item.json", make_item("s", hrefs, scale=2.0, offset=1.0))
    raw = open_raster(rgb).read(100, 100, 32, 32)[0]
    source = open_input(item, assets=list(KEYS))
    assert isinstance(source, ScaledSource)
    np.testing.assert_allclose(source.read(100, 100, 32, 32)[0], raw * 2 + 1)
    source.close()
    source = open_input(item, assets=list(KEYS), scale=[0.5])
    np.testing.assert_allclose(source.read(100, 100, 32, 32)[0], raw * 0.5 + 1)
    source.close()


def test_assets_on_a_plain_raster_are_refused(rgb):
    with pytest.raises(ConfigError, match="assets .* picks the assets of a STAC item"):
        open_input(rgb, assets=["red"])


def test_an_output_over_an_asset_is_refused(tmp_path, item_file, ckpt):
    asset = tmp_path / "assets" / "B03.tif"
    assert str(asset) in raster_files(item_file)
    before = snapshot(tmp_path)
    res = run_cli(
        "predict", item_file, asset, "--model", ckpt, "--assets", "B04,B03,B02", "--overwrite"
    )
    assert res.code != 0 and "would overwrite the input" in res.err, res.err
    assert snapshot(tmp_path) == before


def test_item_collection_batch_writes_one_output_per_item(tmp_path, rgb, ckpt):
    split_bands(rgb, tmp_path / "full")
    split_bands(rgb, tmp_path / "crop", window=((100, 300), (200, 420)))
    items = [
        make_item("scene-a", [f"full/{k}.tif" for k in KEYS]),
        make_item("scene-b", [f"crop/{k}.tif" for k in KEYS]),
    ]
    coll = tmp_path / "search.json"
    coll.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    assert stac.item_inputs(str(coll)) == [f"{coll}#scene-a", f"{coll}#scene-b"]
    with pytest.raises(InputError, match="item collection of 2 items"):
        open_input(coll, assets=list(KEYS))
    out = tmp_path / "out"
    res = run_cli(
        "predict", coll, "--output-dir", out, "--model", ckpt, "--assets", "red,green,blue"
    )
    assert res.code == 0, res.out + res.err
    assert "2 of 2 rasters done" in res.out
    a, b = _read(out / "scene-a_classes.tif")[0], _read(out / "scene-b_classes.tif")[0]
    assert a.shape == (1, 718, 791) and b.shape == (1, 200, 220)
    single = tmp_path / "single.tif"
    res = run_cli(
        "predict", f"{coll}#scene-a", single, "--model", ckpt, "--assets", "red,green,blue"
    )
    assert res.code == 0, res.err
    np.testing.assert_array_equal(_read(single)[0], a)


def test_an_item_url_with_relative_hrefs_reads_its_assets_over_http(tmp_path, item_file, rgb):
    from test_remote_inputs import serve

    proc, base = serve(item_file.parent)
    try:
        url = f"{base}/item.json"
        assert stac.stac_data_files(url)[1] == f"/vsicurl/{base}/assets/B04.tif"
        with open_raster(rgb) as ref, open_input(url, assets=list(KEYS)) as got:
            np.testing.assert_array_equal(got.read(0, 0, 200, 300)[0], ref.read(0, 0, 200, 300)[0])
    finally:
        proc.kill()
        proc.wait()
