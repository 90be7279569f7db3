"""Band scaling: the training value range in the checkpoint, predict's warning, --scale/--offset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from helpers import make_checkpoint
from hostile import run_cli, run_subprocess

from geoseg.config import PredictConfig, build_config
from geoseg.errors import CheckpointError, ConfigError
from geoseg.io.raster import ScaledSource, open_input, open_raster, sample_range
from geoseg.model.checkpoint import GEOSEG_FILE, ModelMeta, read_meta, value_range_mismatch
from geoseg.train import stats


def with_range(path, value_range):
    """Record ``value_range`` in an existing checkpoint's metadata, as training does."""
    meta = read_meta(path).replace(value_range=value_range)
    (path / GEOSEG_FILE).write_text(json.dumps(meta.to_dict()))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp("scaling") / "m.geoseg", tile=64)
    return with_range(path, [[0.0, 255.0]] * 3)


@pytest.fixture(scope="module")
def s2(shared_data):
    hits = sorted((shared_data / "sen1floods11-sample" / "S2").glob("*_S2Hand.tif"))
    if not hits:
        pytest.skip("no sen1floods11 S2Hand chip in the shared data")
    return hits[0]


def warnings_of(res):
    return [ln for ln in res.err.splitlines() if ln.startswith("WARNING")]


def test_an_int16_scene_through_an_8bit_model_warns(tmp_path, s2, ckpt):
    # a real process: predict's warnings go to stderr through the CLI's logging set-up
    res = run_subprocess("predict", s2, tmp_path / "o.tif", "--model", ckpt, "--bands", "4,3,2")
    assert res.code == 0, res.err
    lines = [ln for ln in warnings_of(res) if "trained on" in ln]
    assert len(lines) == 1, res.err
    assert "0..255" in lines[0] and "--scale" in lines[0] and str(s2) in lines[0]


def test_with_scale_there_is_no_warning_and_the_result_changes(tmp_path, s2, ckpt):
    plain, scaled = tmp_path / "plain.tif", tmp_path / "scaled.tif"
    args = ("--model", ckpt, "--bands", "4,3,2", "--device", "cpu")
    assert run_cli("predict", s2, plain, *args).code == 0
    res = run_subprocess("predict", s2, scaled, *args, "--scale", "0.0255")
    assert res.code == 0, res.err
    assert not [ln for ln in warnings_of(res) if "trained on" in ln], res.err
    with rasterio.open(plain) as a, rasterio.open(scaled) as b:
        assert not np.array_equal(a.read(), b.read())


def test_the_model_sees_raw_times_scale_plus_offset(tmp_path, s2, ckpt, monkeypatch):
    from geoseg.model.engine import Engine
    from geoseg.run.pipeline import predict_file

    seen = []
    original = Engine.predict_proba

    def spy(self, batch):
        seen.append(np.array(batch))
        return original(self, batch)

    monkeypatch.setattr(Engine, "predict_proba", spy)
    scale, offset = (0.0255, 0.03, 0.01), (1.0, -2.0, 0.5)
    cfg = PredictConfig(
        tile=512, overlap=0, bands=(4, 3, 2), scale=scale, offset=offset, device="cpu"
    )
    predict_file(s2, tmp_path / "o.tif", ckpt, cfg)
    with rasterio.open(s2) as src:
        raw = src.read([4, 3, 2]).astype(np.float32)
    want = raw * np.float32(scale).reshape(-1, 1, 1) + np.float32(offset).reshape(-1, 1, 1)
    assert len(seen) == 1 and seen[0].shape == (1, 3, 512, 512)
    np.testing.assert_allclose(seen[0][0], want, rtol=1e-6)


def test_scaled_source_and_per_band_values(s2):
    raw = open_raster(s2, (4, 3, 2)).read(10, 20, 30, 40)[0]
    source = open_input(s2, (4, 3, 2), scale=[2.0], offset=[1.0, 2.0, 3.0])
    assert isinstance(source, ScaledSource)
    data, _ = source.read(10, 20, 30, 40)
    np.testing.assert_allclose(data, raw * 2 + np.array([1, 2, 3]).reshape(-1, 1, 1))
    assert not isinstance(open_input(s2, (4, 3, 2), scale=[1.0], offset=[0.0]), ScaledSource)
    with pytest.raises(Exception, match="scale gives 2 values for 3 bands"):
        open_input(s2, (4, 3, 2), scale=[1.0, 2.0])


def test_sample_range_and_the_mismatch_rule(s2, ckpt):
    meta = read_meta(ckpt)
    lo, hi = sample_range(open_raster(s2, (4, 3, 2)))
    assert min(hi) > 4 * 255  # int16 reflectance numbers
    assert value_range_mismatch(meta, (lo, hi), "x") is not None
    assert value_range_mismatch(meta, ([0] * 3, [200.0] * 3), "x") is None
    assert value_range_mismatch(meta, ([0] * 3, [0.8] * 3), "x") is not None  # reflectance
    assert value_range_mismatch(meta.replace(value_range=None), (lo, hi), "x") is None


def test_sample_range_reads_block_aligned_windows_of_valid_pixels(tmp_path, monkeypatch):
    from conftest import write_geotiff

    rng = np.random.default_rng(3)
    data = rng.integers(10, 200, size=(2, 1100, 900)).astype(np.int16)
    data[:, :700, :] = -9999  # nodata over the windows of the upper half
    data[0, 720, 100] = 7  # extremes inside the lower sample windows (rows 512-767)
    data[1, 760, 600] = 4321
    tiled = {"tiled": True, "blockxsize": 256, "blockysize": 256}
    src = open_raster(write_geotiff(tmp_path / "r.tif", data, nodata=-9999, **tiled))
    reads = []
    read = type(src).read
    monkeypatch.setattr(type(src), "read", lambda s, *w: reads.append(w) or read(s, *w))
    lo, hi = sample_range(src)
    assert all(r % 256 == 0 and c % 256 == 0 for r, c, _, _ in reads), reads
    picked = np.zeros(data.shape[1:], bool)
    for r, c, h, w in reads:
        picked[r : r + h, c : c + w] = True
    picked &= data[0] != -9999
    assert (lo, hi) == ([7.0, data[1][picked].min()], [data[0][picked].max(), 4321.0])
    data[:] = -9999
    empty = open_raster(write_geotiff(tmp_path / "e.tif", data, nodata=-9999))
    assert sample_range(empty) is None


def test_scale_options_are_checked_and_take_one_number_from_yaml():
    assert build_config(PredictConfig, {"scale": 0.0001}).scale == (0.0001,)
    assert build_config(PredictConfig, {"offset": [1, 2]}).offset == (1, 2)
    for bad in ({"scale": 0}, {"scale": [float("nan")]}, {"offset": "x"}, {"assets": []}):
        with pytest.raises(ConfigError):
            build_config(PredictConfig, bad)


def test_bad_scale_flag_is_one_line(tmp_path, s2, ckpt):
    res = run_cli("predict", s2, tmp_path / "o.tif", "--model", ckpt, "--scale", "a,b")
    assert res.code != 0 and "not a number" in res.err and "Traceback" not in res.err


def test_resume_identity_holds_the_scaling(tmp_path, make_raster, ckpt):
    from geoseg.core.plan import make_plan
    from geoseg.run.pipeline import job_identity

    src = make_raster(height=64, width=64, bands=3)
    plan = make_plan(64, 64, tile=64, overlap=0, batch_size=1)
    info = open_raster(src).info
    a = job_identity(src, ckpt, plan, info, "cpu", PredictConfig(scale=(0.5,)))
    b = job_identity(src, ckpt, plan, info, "cpu", PredictConfig(scale=(0.25,)))
    assert a != b and a["input_options"] == [None, [0.5], None]


def test_value_range_round_trips_and_is_validated(ckpt):
    meta = read_meta(ckpt)
    assert meta.value_range == [[0.0, 255.0]] * 3
    assert ModelMeta.from_dict(meta.to_dict()) == meta
    old = meta.to_dict()
    del old["value_range"]  # a checkpoint written before the field existed
    assert ModelMeta.from_dict(old).value_range is None
    for bad in ([[0, 255]], [[0, 255]] * 2 + [[5, 1]], [[0, float("inf")]] * 3, "0..255"):
        with pytest.raises(CheckpointError, match="value_range"):
            meta.replace(value_range=bad)


def test_training_records_the_value_range():
    from train_helpers import PALETTE, scene

    from geoseg.train.config import build_train_config
    from geoseg.train.session import fresh_meta
    from geoseg.train.sources import Sample

    cfg = build_train_config({"classes": list(PALETTE), "chip_size": 64})
    img, ids = scene(64, 64, 0)
    meta = fresh_meta(cfg, [Sample("a", img, ids)], {})
    want = [[float(b.min()), float(b.max())] for b in img]
    assert meta.value_range == want
    valid = np.zeros(img.shape[1:], bool)
    valid[:8, :8] = True
    got = stats.band_range([img], [valid])
    assert got == [[float(b[:8, :8].min()), float(b[:8, :8].max())] for b in img]
