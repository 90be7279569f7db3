"""geoseg quicklook: image beside the colour class map with a legend, as a PNG."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_geotiff  # noqa: E402
from train_helpers import run_cli  # noqa: E402

from geoseg.commands.quicklook import colourize, stretch  # noqa: E402


def test_colourize_and_stretch():
    ids = np.array([[0, 1], [2, 255]])
    rgba = colourize(ids, [(255, 0, 0), (0, 255, 0), (0, 0, 255)], nodata=255)
    assert rgba[0, 0].tolist() == [1, 0, 0, 1] and rgba[1, 0].tolist() == [0, 0, 1, 1]
    assert rgba[1, 1, 3] == 0  # nodata transparent
    img = np.stack([np.arange(100).reshape(10, 10)] * 3).astype(np.uint16) * 40
    out = stretch(img)
    assert out.shape == (10, 10, 3) and out.min() == 0 and out.max() == 1


def test_quicklook_cli_png(make_raster, tmp_path):
    from PIL import Image

    image = make_raster(height=60, width=80, bands=3)
    ids = np.zeros((60, 80), np.uint8)
    ids[:, 40:] = 1
    ids[:10, :10] = 255
    classes = write_geotiff(tmp_path / "cls.tif", ids[None], nodata=255)
    import rasterio

    with rasterio.open(classes, "r+") as dst:
        dst.write_colormap(1, {0: (200, 30, 30, 255), 1: (30, 30, 200, 255)})
    out = tmp_path / "ql.png"
    r = run_cli("quicklook", str(image), str(classes), str(out))
    assert r.returncode == 0, r.stderr
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape[1] > png.shape[0] > 60
    flat = png.reshape(-1, 3)
    for colour in ((200, 30, 30), (30, 30, 200)):
        assert (np.abs(flat.astype(int) - colour).sum(1) <= 6).sum() > 500, colour
    r = run_cli("quicklook", str(image), str(classes), str(out))
    assert r.returncode == 1 and "--overwrite" in r.stderr
    small = make_raster(height=30, width=30, bands=3, name="small.tif")
    r = run_cli("quicklook", str(small), str(classes), str(tmp_path / "x.png"))
    assert r.returncode == 1 and "does not match" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_quicklook_legend_reads_the_class_names_geoseg_writes(make_raster, tmp_path):
    """predict writes CLASS_NAMES on band 1; the legend shows them, not 'class 0..'."""
    from helpers import make_checkpoint
    from hostile import run_cli as run

    from geoseg.commands.quicklook import _read, legend_for

    image = make_raster(height=40, width=40, bands=3)
    ckpt = make_checkpoint(tmp_path / "m.geoseg", classes=4, tile=32)
    out = tmp_path / "classes.tif"
    assert run("predict", image, out, "--model", ckpt, "--no-progress").code == 0
    _, _, cmap, tags = _read(str(out), 100, classmap=True)
    names, colours = legend_for(str(out), None, 4, cmap, tags)
    assert names == ["c0", "c1", "c2", "c3"] and len(colours) == 4


def test_legend_names_each_colour():
    from geoseg.commands.quicklook import colour_name
    from geoseg.core.labels import parse_colour

    dubai = ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"]  # Building .. Water
    names = [colour_name(parse_colour(c)) for c in dubai]
    assert names == ["dark purple", "purple", "cyan", "yellow", "orange"]
    assert colour_name((0, 0, 0)) == "black" and colour_name((155, 155, 155)) == "grey"
    assert colour_name((120, 70, 20)) == "brown"


def test_overlay_blends_classes_over_the_image(make_raster, tmp_path):
    from PIL import Image

    from geoseg.commands.quicklook import overlay

    rgb = np.full((2, 2, 3), 0.5, np.float32)
    rgba = colourize(np.array([[0, 255], [0, 0]]), [(255, 0, 0)], nodata=255)
    out = overlay(rgb, rgba, 0.5)
    assert out[0, 0].tolist() == [0.75, 0.25, 0.25] and out[0, 1].tolist() == [0.5, 0.5, 0.5]
    image = make_raster(height=60, width=80, bands=3)
    ids = np.zeros((60, 80), np.uint8)
    classes = write_geotiff(tmp_path / "cls.tif", ids[None], nodata=255)
    png = tmp_path / "ov.png"
    r = run_cli("quicklook", str(image), str(classes), str(png), "--overlay", "0.4")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(png)).shape[0] > 60
    r = run_cli("quicklook", str(image), str(classes), str(tmp_path / "b.png"), "--overlay", "0")
    assert r.returncode == 2 and "--overlay" in r.stderr and not (tmp_path / "b.png").exists()
