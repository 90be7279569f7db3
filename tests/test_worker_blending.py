"""Blending where the model runs, on a real dask.distributed cluster (worker processes on loopback).

Strips are evaluated and blended by the workers; only finished class ids (and the uint8 layers
asked for) reach the client, and Zarr chunks are written by the workers themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from helpers import naive_reference

from geoseg.config import PredictConfig
from geoseg.core.plan import make_plan
from geoseg.core.strips import Counts, Finish, Rows
from geoseg.model.engine import EngineSpec
from geoseg.run.pipeline import predict_file
from geoseg.run.scheduling import dask_client, piece_futures


@pytest.fixture(scope="module")
def two_workers():
    """A local cluster of two worker processes (scheduler and workers on 127.0.0.1)."""
    with dask_client(workers=2) as client:
        yield client


@pytest.fixture
def image(make_raster):
    from geoseg.io.raster import open_input

    src = make_raster(height=190, width=130, bands=3, nodata=0)
    source = open_input(src)
    try:
        data, valid = source.read(0, 0, 190, 130)  # the pixels and mask predict reads
    finally:
        source.close()
    return src, data, valid


def class_map(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_maps_are_identical_for_any_block_size_workers_and_threads(
    tmp_path, image, ckpt, two_workers, monkeypatch
):
    from geoseg.core import strips

    monkeypatch.setattr(strips, "STRIP_PIXELS", 1)  # thin strips: many seams
    monkeypatch.setattr(strips, "STRIP_BATCHES", 1)
    src, data, valid = image
    ref = naive_reference(ckpt, data, valid, 32, 8, "gaussian", 2)
    runs = [
        ({"block_size": 32}, None),
        ({"block_size": 4096}, None),
        ({"block_size": 48}, two_workers),
    ]
    for i, (opts, client) in enumerate(runs):
        cfg = PredictConfig(tile=32, overlap=8, batch_size=2, device="cpu", **opts)
        summary = predict_file(src, tmp_path / f"o{i}.tif", ckpt, cfg, client=client)
        assert np.array_equal(class_map(tmp_path / f"o{i}.tif"), ref), opts
        assert summary.evaluations == summary.run  # every window evaluated once


def test_task_results_are_class_ids_not_probabilities(image, ckpt, two_workers):
    # the strips' constants are not patched in worker processes: the plan's strips are sent
    # with the tasks, so a plan of thin strips is made here
    src, _, _ = image
    from geoseg.io.raster import open_input

    plan = make_plan(190, 130, tile=32, overlap=8, batch_size=2, strip_rows=1)
    assert len(plan.strips) > 5
    spec = EngineSpec(str(ckpt), "cpu")
    finish = Finish(255, "uint8")
    source = open_input(src)
    received = 0
    try:
        for piece in piece_futures(two_workers, source, plan, spec, finish):
            parts, counts = piece.future.result()  # one message per strip
            assert isinstance(counts, Counts) and counts.run > 0
            assert (parts[0].row0, parts[-1].row1) == (piece.row0, piece.row1)
            for rows in parts:  # the seam above, then the strip's own rows
                assert isinstance(rows, Rows) and rows.probs is None and rows.confidence is None
                assert rows.classes.dtype == np.uint8
                assert rows.nbytes == (rows.row1 - rows.row0) * 130  # one byte per pixel
                received += rows.nbytes
    finally:
        source.close()
    assert received == 190 * 130  # each output pixel once


def test_probabilities_travel_as_uint8(image, ckpt, two_workers, tmp_path):
    src, _, _ = image
    cfg = PredictConfig(tile=32, overlap=8, batch_size=2, device="cpu", probabilities=True)
    predict_file(src, tmp_path / "local.tif", ckpt, cfg)
    predict_file(src, tmp_path / "cluster.tif", ckpt, cfg, client=two_workers)
    from geoseg.io.writers import probabilities_path

    for name in ("local.tif", "cluster.tif"):
        with rasterio.open(probabilities_path(tmp_path / name)) as ds:
            assert ds.dtypes[0] == "uint8"
    with (
        rasterio.open(probabilities_path(tmp_path / "local.tif")) as a,
        rasterio.open(probabilities_path(tmp_path / "cluster.tif")) as b,
    ):
        assert np.array_equal(a.read(), b.read())


def test_zarr_chunks_are_written_by_the_workers(
    make_raster, ckpt, two_workers, tmp_path, monkeypatch
):
    import xarray as xr

    from geoseg.io import writers

    written_here = []
    real = writers.write_zarr_region
    monkeypatch.setattr(
        writers, "write_zarr_region", lambda *a, **k: written_here.append(a) or real(*a, **k)
    )
    src = make_raster(height=1100, width=130, bands=3)  # three chunk rows of 512
    cfg = PredictConfig(tile=32, overlap=8, batch_size=8, device="cpu", block_size=64)
    predict_file(src, tmp_path / "ref.tif", ckpt, cfg)
    predict_file(src, tmp_path / "out.zarr", ckpt, cfg, client=two_workers)
    assert written_here == []  # not one chunk written by this (the client) process
    store = xr.open_zarr(tmp_path / "out.zarr")
    # 512^2 chunks: the tasks write 512 rows each (their block rows of 64 rounded up)
    assert store["classes"].encoding["chunks"] == (512, 512)
    assert np.array_equal(store["classes"].values, class_map(tmp_path / "ref.tif"))
    # and with the in-process cluster the same store comes out
    predict_file(src, tmp_path / "local.zarr", ckpt, cfg)
    assert np.array_equal(
        xr.open_zarr(tmp_path / "local.zarr")["classes"].values, store["classes"].values
    )
