"""Real CLI invocations (subprocesses) of predict, tiles and model, good and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
from helpers import make_checkpoint


def geoseg(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def assert_clean_error(proc, *words):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    msg = lines[-1]
    for w in words:
        assert w.lower() in proc.stderr.lower(), proc.stderr
    return msg


def test_help_does_not_import_torch():
    code = (
        "import sys, cli\ntry:\n cli.main(['--help'])\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "cli.main(['predict', '--help'])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "torch imported" not in proc.stderr
    assert "--block-size" in proc.stdout


def test_predict_end_to_end_with_summary_and_config(tmp_path, make_raster, ckpt):
    src = make_raster(height=150, width=130, bands=3)
    cfg = tmp_path / "p.yaml"
    cfg.write_text("tile: 64\noverlap: 16\nblend: cosine\ndevice: cpu\n")
    out = tmp_path / "out.tif"
    proc = geoseg("predict", src, out, "--model", ckpt, "--config", cfg, "--overlap", "8")
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "windows run" in summary and "Mpx/s" in summary and "peak memory" in summary
    with rasterio.open(out) as ds:
        assert ds.shape == (150, 130) and ds.crs is not None
    # the flag (--overlap 8) overrode the file (16): 3x3 grid of 64-px windows with stride 56
    assert "9 windows run" in summary
    # existing output is refused without --overwrite, and left untouched
    before = out.read_bytes()
    proc = geoseg("predict", src, out, "--model", ckpt, "--tile", "64")
    assert_clean_error(proc, "--overwrite")
    assert out.read_bytes() == before
    proc = geoseg(
        "predict", src, out, "--model", ckpt, "--tile", "64", "--overwrite", "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr


def _no_output_left(tmp_path, name="out.tif"):
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith((name, f".{name}"))]
    assert left == [], left


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not_raster",
        "truncated",
        "bands",
        "overlap",
        "overlap_neg",
        "bad_bands",
        "no_ckpt",
        "bad_ckpt",
        "not_ckpt",
        "no_dir",
        "bad_yaml",
        "bad_ext",
        "unknown_opt",
    ],
)
def test_bad_input_gives_one_line_error_and_no_output(tmp_path, make_raster, ckpt, case):
    src = make_raster(height=80, width=80, bands=3)
    out = tmp_path / "out.tif"
    args = [src, out, "--model", ckpt, "--tile", "64"]
    expect = []
    if case == "missing":
        args[0] = tmp_path / "nope.tif"
        expect = ["nope.tif"]
    elif case == "not_raster":
        bad = tmp_path / "notes.txt"
        bad.write_text("hello")
        args[0] = bad
        expect = ["notes.txt"]
    elif case == "truncated":
        big = make_raster(
            height=600,
            width=600,
            bands=3,
            name="big.tif",
            tiled=True,
            blockxsize=256,
            blockysize=256,
        )
        cut = tmp_path / "cut.tif"
        cut.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
        args[0] = cut
        expect = ["cut.tif"]
    elif case == "bands":
        args[0] = make_raster(height=80, width=80, bands=2, name="two.tif")
        expect = ["--bands", "expects 3"]
    elif case == "overlap":
        args += ["--overlap", "64"]
        expect = ["--overlap 64", "--tile 64"]
    elif case == "overlap_neg":
        args += ["--overlap", "-3"]
        expect = ["'--overlap'", "overlap -3", "0 to"]
    elif case == "bad_bands":
        args += ["--bands", "1,2,9"]
        expect = ["9"]
    elif case == "no_ckpt":
        args[3] = tmp_path / "missing.geoseg"
        expect = ["missing.geoseg"]
    elif case == "bad_ckpt":
        broken = make_checkpoint(tmp_path / "broken.geoseg")
        (broken / "model.safetensors").write_bytes(b"garbage")
        args[3] = broken
        expect = ["corrupt"]
    elif case == "not_ckpt":
        d = tmp_path / "plain"
        d.mkdir()
        args[3] = d
        expect = ["not a geoseg checkpoint"]
    elif case == "no_dir":
        args[1] = tmp_path / "nodir" / "out.tif"
        expect = ["nodir"]
    elif case == "bad_yaml":
        cfg = tmp_path / "bad.yaml"
        cfg.write_text("tile: [1, 2\n")
        args += ["--config", cfg]
        expect = ["bad.yaml", "yaml"]
    elif case == "bad_ext":
        args[1] = tmp_path / "out.png"
        expect = [".tif"]
    elif case == "unknown_opt":
        cfg = tmp_path / "opt.yaml"
        cfg.write_text("tiles: 64\n")
        args += ["--config", cfg]
        expect = ["tiles"]
    proc = geoseg("predict", *args)
    assert_clean_error(proc, *expect)
    _no_output_left(tmp_path, "out.tif")
    with rasterio.open(src) as ds:  # the input is intact
        assert ds.read().any()


def test_model_create_and_info(tmp_path):
    out = tmp_path / "m.geoseg"
    proc = geoseg(
        "model",
        "create",
        out,
        "--arch",
        "fpn",
        "--encoder",
        "resnet18",
        "--classes",
        "3",
        "--bands",
        "4",
        "--option",
        "encoder_depth=3",
        "--option",
        "decoder_pyramid_channels=32",
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(geoseg("model", "info", out, "--json", "-").stdout)
    assert meta["arch"] == "fpn" and meta["in_channels"] == 4 and meta["classes"] == 3
    assert meta["model_options"] == {"encoder_depth": 3, "decoder_pyramid_channels": 32}
    # usable from plain smp too
    import segmentation_models_pytorch as smp

    model = smp.from_pretrained(str(out))
    assert type(model).__name__ == "FPN"
    assert_clean_error(geoseg("model", "create", out, "--classes", "3"), "--overwrite")
    assert_clean_error(
        geoseg("model", "create", tmp_path / "x", "--classes", "3", "--arch", "nosuch"), "nosuch"
    )


def test_tiles_summary_and_geojson(tmp_path, make_raster):
    src = make_raster(height=300, width=200, bands=3, nodata=0)
    with rasterio.open(src, "r+") as ds:
        d = ds.read()
        d[:, :128, :] = 0
        ds.write(d)
    gj = tmp_path / "w.geojson"
    proc = geoseg("tiles", src, "--tile", "128", "--overlap", "32", "--geojson", gj)
    assert proc.returncode == 0, proc.stderr
    assert "windows      6" in proc.stdout and "skipped      2" in proc.stdout
    doc = json.loads(gj.read_text())
    assert len(doc["features"]) == 6
    assert sum(f["properties"]["skipped"] for f in doc["features"]) == 2
    # RFC 7946 by default: WGS84 lon/lat, no crs member, edges densified
    assert "crs" not in doc
    with rasterio.open(src) as ds:
        corner, far = ds.transform * (0, 0), ds.transform * (128, 128)
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    to_wgs84 = pyproj.Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True)
    assert ring[0] == pytest.approx(list(to_wgs84.transform(*corner)), abs=1e-6)
    assert ring[16] == pytest.approx(list(to_wgs84.transform(*far)), abs=1e-6)
    assert len(ring) == 33 and ring[0] == ring[-1]
    info = pyogrio.read_info(gj)
    assert info["crs"] == "EPSG:4326" and info["features"] == 6
    # --crs native: the raster's own coordinates, the CRS named as GDAL reads it
    native = tmp_path / "native.geojson"
    args = ["--tile", "128", "--overlap", "32", "--geojson", native, "--crs", "native"]
    assert geoseg("tiles", src, *args).returncode == 0
    doc = json.loads(native.read_text())
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == pytest.approx(list(corner))
    np.testing.assert_allclose(ring[2], list(far))
    assert "32618" in doc["crs"]["properties"]["name"]
    assert pyogrio.read_info(native)["crs"] == "EPSG:32618"


def test_tiles_shows_the_grid_predict_would_use_with_the_model(tmp_path, make_raster):
    src = make_raster(height=300, width=200, bands=3)
    ckpt = make_checkpoint(tmp_path / "m.geoseg", bands=3, tile=64)
    proc = geoseg("tiles", src, "--model", ckpt, "--no-skip-check")
    assert proc.returncode == 0, proc.stderr
    assert "tile         64 x 64" in proc.stdout and "overlap      16 x 16" in proc.stdout
    proc = geoseg("tiles", src, "--no-skip-check")
    assert "tile         512 x 512" in proc.stdout and "overlap      128 x 128" in proc.stdout


def test_quiet_on_the_group_or_the_command_silences_warnings(tmp_path):
    from conftest import write_geotiff

    src = write_geotiff(tmp_path / "local.tif", np.full((3, 40, 40), 90, np.uint8), crs=None)
    ckpt = make_checkpoint(tmp_path / "m.geoseg", bands=3, tile=32)
    args = ["--model", ckpt, "--tile", "32", "--overlap", "8", "--overwrite"]
    loud = geoseg("predict", src, tmp_path / "o.tif", *args)
    assert loud.returncode == 0 and "no georeference" in loud.stderr, loud.stderr
    out = tmp_path / "o.tif"
    for cmd in (["-q", "predict", src, out], ["predict", src, out, "-q"]):
        quiet = geoseg(*cmd, *args)
        assert quiet.returncode == 0, quiet.stderr
        assert "no georeference" not in quiet.stderr and "windows" in quiet.stdout
    verbose = geoseg("-vv", "predict", src, out, *args, "--no-progress")
    assert verbose.returncode == 0 and "DEBUG" in verbose.stderr
