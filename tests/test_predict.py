"""End-to-end tests of the predict pipeline on small generated GeoTIFFs with a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from helpers import naive_reference

from geoseg.config import PredictConfig
from geoseg.core.plan import make_plan
from geoseg.model.checkpoint import default_colours
from geoseg.model.engine import Engine
from geoseg.run.arrays import predict_array
from geoseg.run.pipeline import predict_file


def read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile, src.crs, src.transform


@pytest.mark.parametrize("blend", ["gaussian", "crop"])
def test_partitioning_does_not_change_a_single_pixel(tmp_path, make_raster, ckpt, blend):
    src = make_raster(height=203, width=157, bands=3, nodata=0)
    with rasterio.open(src) as ds:
        image = ds.read().astype(np.float32)
        valid = ds.read_masks(1) > 0
    ref = naive_reference(ckpt, image, valid, 64, 20, blend, 3)
    assert len(np.unique(ref)) > 1, "the tiny model should predict several classes"
    for block_size in (32, 50, 4096):
        out = tmp_path / f"out_{blend}_{block_size}.tif"
        cfg = PredictConfig(
            tile=64, overlap=20, blend=blend, block_size=block_size, batch_size=3, device="cpu"
        )
        summary = predict_file(src, out, ckpt, cfg)
        classes, *_ = read(out)
        assert np.array_equal(classes, ref), f"block size {block_size} differs"
        assert summary.evaluations == summary.run <= summary.windows


def test_local_cluster_of_two_processes_gives_the_same_map(tmp_path, make_raster, ckpt):
    src = make_raster(height=180, width=140, bands=3)
    out1, out2 = tmp_path / "a.tif", tmp_path / "b.tif"
    cfg = PredictConfig(tile=64, overlap=16, batch_size=2, device="cpu", block_size=64)
    predict_file(src, out1, ckpt, cfg)
    s2 = predict_file(src, out2, ckpt, PredictConfig(**{**cfg.__dict__, "workers": 2}))
    assert np.array_equal(read(out1)[0], read(out2)[0])
    assert s2.evaluations == s2.windows


def test_all_nodata_windows_are_skipped_and_written_as_nodata(tmp_path, make_raster, ckpt):
    import rasterio

    src = make_raster(height=200, width=200, bands=3, nodata=0)
    with rasterio.open(src, "r+") as ds:
        data = ds.read()
        data[:, :, :100] = 0  # left half nodata
        ds.write(data)
    out = tmp_path / "out.tif"
    summary = predict_file(src, out, ckpt, PredictConfig(tile=64, overlap=16, device="cpu"))
    classes, profile, *_ = read(out)
    assert summary.skipped > 0 and summary.run + summary.skipped == summary.windows
    assert (classes[:, :100] == 255).all()
    assert (classes[:, 100:] != 255).all()
    assert profile["nodata"] == 255


def test_georeference_is_kept(tmp_path, make_raster, ckpt):
    src = make_raster(height=100, width=120, bands=3)
    out = tmp_path / "out.tif"
    predict_file(src, out, ckpt, PredictConfig(tile=64, overlap=16, device="cpu"))
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert a.crs == b.crs and a.transform == b.transform
        assert (a.height, a.width) == (b.height, b.width)
        assert b.dtypes[0] == "uint8"
        assert b.colormap(1)[0][:3] == tuple(default_colours(4)[0])


def test_raster_smaller_than_tile_and_non_square(tmp_path, make_raster, ckpt):
    src = make_raster(height=37, width=90, bands=3)
    out = tmp_path / "out.tif"
    s = predict_file(src, out, ckpt, PredictConfig(tile=64, overlap=16, device="cpu"))
    classes, *_ = read(out)
    assert classes.shape == (37, 90) and (classes != 255).all()
    assert s.windows == 2  # one row (padded), two columns


def test_non_georeferenced_input_warns_and_output_has_no_georeference(
    tmp_path, make_raster, ckpt, caplog
):
    src = make_raster(height=80, width=80, bands=3, crs=None)
    out = tmp_path / "out.tif"
    with caplog.at_level("WARNING"):
        predict_file(src, out, ckpt, PredictConfig(tile=64, overlap=16, device="cpu"))
    assert "no georeference" in caplog.text
    with rasterio.open(out) as ds:
        assert ds.crs is None


def test_band_selection_and_dtypes(tmp_path, make_raster, ckpt):
    for dtype in ("uint16", "int16", "float32"):
        src = make_raster(height=70, width=70, bands=5, dtype=dtype, name=f"{dtype}.tif")
        out = tmp_path / f"{dtype}_classes.tif"
        cfg = PredictConfig(tile=64, overlap=16, device="cpu", bands=(4, 3, 2))
        predict_file(src, out, ckpt, cfg)
        assert read(out)[0].shape == (70, 70)


def test_tta_and_blends_run_and_flip_tta_is_equivariant(ckpt):
    engine = Engine.from_checkpoint(ckpt, device="cpu", tta="flip")
    rng = np.random.default_rng(0)
    img = (rng.random((3, 64, 64)) * 255).astype(np.float32)
    p = engine.predict_proba(img[None])
    q = engine.predict_proba(img[None, :, :, ::-1].copy())
    np.testing.assert_allclose(p[..., ::-1], q, atol=1e-5)
    for blend in ("gaussian", "cosine", "mean", "crop"):
        out = predict_array(engine, img, tile=32, overlap=8, blend=blend)
        assert out.shape == (64, 64) and out.max() < 4


def test_zarr_output_is_read_back_with_its_crs(tmp_path, make_raster, ckpt):
    import rioxarray  # noqa: F401
    import xarray as xr

    src = make_raster(height=90, width=100, bands=3)
    out = tmp_path / "out.zarr"
    cfg = PredictConfig(tile=64, overlap=16, device="cpu", probabilities=True)
    predict_file(src, out, ckpt, cfg)
    tif = tmp_path / "out.tif"
    predict_file(src, tif, ckpt, PredictConfig(tile=64, overlap=16, device="cpu"))
    ds = xr.open_zarr(out)
    var = next(v for v in ds.data_vars if v != "probabilities")
    with rasterio.open(src) as ref:
        assert ds[var].rio.crs == ref.crs
        assert tuple(ds[var].rio.transform())[:6] == tuple(ref.transform)[:6]
    assert np.array_equal(ds[var].values, read(tif)[0])
    assert ds["probabilities"].shape == (4, 90, 100)


def test_a_run_opens_the_input_once_per_thread_not_once_per_task(
    tmp_path, make_raster, ckpt, monkeypatch
):
    # dask hands every task a freshly unpickled source; re-opening the file per task kept
    # each GDAL handle alive and grew a 16384^2 run by ~1.5 MB per task (2.84 GiB peak)
    from geoseg.io import raster
    from geoseg.run import scheduling

    src = make_raster(height=256, width=256, bands=3)
    opened = []
    real = raster.GdalSource._open

    def spy(self):
        opened.append(self._path)
        return real(self)

    monkeypatch.setattr(raster.GdalSource, "_open", spy)
    from geoseg.core import strips

    monkeypatch.setattr(strips, "STRIP_PIXELS", 1)  # one grid row per strip: many tasks
    monkeypatch.setattr(strips, "STRIP_BATCHES", 1)
    cfg = PredictConfig(tile=32, overlap=8, batch_size=2, device="cpu")
    predict_file(src, tmp_path / "out.tif", ckpt, cfg)
    plan = make_plan(256, 256, tile=32, overlap=8, batch_size=2)
    assert len(plan.strips) >= 10  # and 4 or 5 tasks each
    # the client's handle, one per worker thread and one per helper thread that the last
    # strips borrow (at most threads - 1): a second run opens no more than the first
    threads = scheduling.local_threads()
    assert 1 <= len(opened) <= 1 + threads + threads - 1
    first = len(opened)
    predict_file(src, tmp_path / "again.tif", ckpt, cfg)
    assert len(opened) - first <= first


def quiet_callbacks(dask_worker) -> dict:
    calls = dask_worker.periodic_callbacks
    return {
        "profile": "profile" in calls,
        "heartbeat": "heartbeat" in calls,
        "tick_ms": calls["tick"].callback_time,
        "monitor_ms": calls["monitor"].callback_time,
        "memory_monitor_ms": calls["memory_monitor"].callback_time,
    }


def test_clusters_geoseg_starts_run_without_the_profiler_and_with_slow_polls():
    # the profiler cost 7% of predict; the 20 ms tick and the monitors' polls 40% of the
    # event loop's CPU time. In this process and in worker processes alike.
    from geoseg.run.scheduling import dask_client

    expected = {
        "profile": False,
        "heartbeat": True,
        "tick_ms": 500,
        "monitor_ms": 2000,
        "memory_monitor_ms": 500,
    }
    with dask_client() as client:
        (worker,) = client.cluster.workers.values()
        assert quiet_callbacks(worker) == expected
    with dask_client(workers=1) as client:
        (seen,) = client.run(quiet_callbacks).values()
        assert seen == expected


def malloc_variables():
    import os

    from geoseg.run.memory import malloc_environ

    return {k: os.environ.get(k) for k in malloc_environ()}


def test_worker_processes_start_with_geosegs_malloc_settings(monkeypatch):
    # glibc reads them only at process start; Dask's own default (a 64 KB trim threshold)
    # made each worker fault its memory in again after nearly every free
    from geoseg.run.memory import malloc_environ
    from geoseg.run.scheduling import dask_client, worker_spawn_env

    assert worker_spawn_env()["OMP_NUM_THREADS"]  # Dask's own variables are kept
    for key in malloc_environ():  # the nannies export them here: restored after the test
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    with dask_client(workers=1) as client:
        (seen,) = client.run(malloc_variables).values()
    assert seen == malloc_environ()
    assert seen["MALLOC_TRIM_THRESHOLD_"] != "65536"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the user's setting wins
    with dask_client(workers=1) as client:
        (seen,) = client.run(malloc_variables).values()
    assert seen == {**malloc_environ(), "MALLOC_ARENA_MAX": "4"}


def test_thin_strips_and_many_seams_still_equal_the_reference(
    tmp_path, make_raster, ckpt, monkeypatch
):
    # one grid row per strip: every band of rows under two grid rows is a seam, finished by a
    # task of its own from two strips' partial sums
    from geoseg.core import strips

    monkeypatch.setattr(strips, "STRIP_PIXELS", 1)
    monkeypatch.setattr(strips, "STRIP_BATCHES", 1)
    src = make_raster(height=150, width=170, bands=3, nodata=0)
    with rasterio.open(src) as ds:
        image = ds.read().astype(np.float32)
        valid = ds.read_masks(1) > 0
    ref = naive_reference(ckpt, image, valid, 32, 8, "gaussian", 3)
    for workers in (None, 2):
        cfg = PredictConfig(
            tile=32, overlap=8, batch_size=3, device="cpu", block_size=64, workers=workers
        )
        predict_file(src, tmp_path / f"out{workers}.tif", ckpt, cfg)
        assert np.array_equal(read(tmp_path / f"out{workers}.tif")[0], ref)


@pytest.mark.parametrize(
    ("device", "tile", "expected"),
    [
        ("cpu", (256, 256), 2),
        ("cpu", (512, 512), 1),
        ("cpu", (128, 96), 10),
        ("cuda", (512, 512), 16),
    ],
)
def test_auto_batch_size_holds_a_fixed_number_of_pixels_on_the_cpu(device, tile, expected):
    from geoseg.run.pipeline import auto_batch_size

    assert auto_batch_size(device, tile) == expected


def test_in_process_cpu_runs_share_the_cores_between_model_calls():
    from geoseg.model.engine import available_cores
    from geoseg.run.pipeline import engine_spec
    from geoseg.run.scheduling import dask_client, in_process_threads, local_threads

    with dask_client() as client:
        lanes = in_process_threads(client)
        assert lanes == local_threads()
        cfg = PredictConfig(device="cpu")
        assert engine_spec("m.geoseg", "cpu", cfg, client).threads == max(
            1, available_cores() // lanes
        )
        assert engine_spec("m.geoseg", "cuda", cfg, client).threads is None


def test_worker_processes_keep_torch_threads_as_they_are():
    from geoseg.run.pipeline import engine_spec
    from geoseg.run.scheduling import dask_client, in_process_threads, process_layout, total_threads

    threads, per_call = process_layout(1)
    with dask_client(workers=1) as client:
        assert in_process_threads(client) is None
        assert engine_spec("m.geoseg", "cpu", PredictConfig(), client).threads is None
        assert total_threads(client) == threads
        seen = client.run(lambda: __import__("torch").get_num_threads())
        assert list(seen.values()) == [per_call]  # set through OMP_NUM_THREADS
