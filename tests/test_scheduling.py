"""Scheduling: how many windows a strip (one Dask task) holds, thread counts, borrowed lanes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import rasterio
from helpers import naive_reference

from geoseg.config import PredictConfig
from geoseg.core.plan import make_plan
from geoseg.core.strips import strip_height
from geoseg.run.scheduling import cpu_threads_per_call, local_threads


def test_a_strip_holds_about_four_megapixels_of_windows_or_eight_batches():
    grid_of = make_plan(4096, 4096, tile=256, overlap=64, batch_size=2)
    assert grid_of.grid.shape[1] == 21
    assert strip_height(grid_of.grid, 2) == 1  # 21 grid rows: at most 1/16 of them
    mid = make_plan(8192, 8192, tile=256, overlap=64, batch_size=2)
    assert mid.grid.shape[1] == 43 and strip_height(mid.grid, 2) == 2  # 86 windows
    wide = make_plan(8192, 16384, tile=256, overlap=64, batch_size=2)
    assert strip_height(wide.grid, 2) == 1  # 86 windows in one grid row: over 2**22 px
    plan = make_plan(200_000, 300, tile=256, overlap=64, batch_size=2)  # 2 windows a row
    assert strip_height(plan.grid, 2) == 32  # 64 windows
    assert strip_height(plan.grid, 16) == 64  # 8 batches of 16 on a GPU
    assert all(s.batches[1] > s.batches[0] for s in plan.strips)
    small = make_plan(1024, 300, tile=256, overlap=64, batch_size=2)  # 6 grid rows
    assert strip_height(small.grid, 2) == 1 and len(small.strips) == small.grid.shape[0] == 5


def test_thread_counts_share_the_cores():
    assert [local_threads(c) for c in (1, 2, 3, 4, 16)] == [2, 2, 3, 4, 4]
    assert cpu_threads_per_call(2, cores=2) == 1
    assert cpu_threads_per_call(4, cores=16) == 4
    assert cpu_threads_per_call(4, cores=2) == 1


def test_worker_processes_split_their_share_of_cores_into_model_threads():
    from geoseg.run.scheduling import process_layout

    assert process_layout(1, cores=2) == (2, 1)  # two 1-thread model calls side by side
    assert process_layout(2, cores=2) == (1, 1)
    assert process_layout(4, cores=2) == (1, 1)  # oversubscribed, as asked
    assert process_layout(2, cores=16) == (4, 2)
    assert process_layout(1, cores=64) == (4, 16)


def test_dask_is_told_the_size_of_what_a_strip_task_holds():
    """The scheduler places a strip's finishing task by these sizes (where the strip lies)."""
    import numpy as np
    from dask.sizeof import sizeof

    import geoseg.run.scheduling  # noqa: F401  (registers the sizes)
    from geoseg.core.stitch import Band
    from geoseg.core.strips import Rows, Strip, StripResult

    seam = Band(0, 64, np.zeros((5, 64, 1000), np.float32), np.zeros((64, 1000), np.float32))
    rows = Rows(64, np.zeros((128, 1000), np.uint8))
    result = StripResult(Strip(0, (0, 1), (0, 256), (64, 192)), rows, seam, seam)
    assert sizeof(seam) == 6 * 64 * 1000 * 4
    assert sizeof(rows) == 128 * 1000
    assert sizeof(result) == 2 * sizeof(seam) + sizeof(rows)


def test_a_strip_borrows_spare_lanes_and_keeps_its_batches_in_order():
    from geoseg.run import scheduling as sch

    batches = [[i, i + 1] for i in range(0, 14, 2)]
    threads = []

    def evaluate(batch):
        threads.append(threading.current_thread().name)
        if batch == [6, 7] and fail:
            raise ValueError("batch 3")
        return batch

    fail = False
    assert list(sch.evaluate_borrowing(evaluate, batches, 2)) == batches
    assert list(sch.evaluate_borrowing(evaluate, batches, 2)) == batches
    assert sum(n.startswith("geoseg-lane") for n in threads) == 6  # batches 1, 3, 5 of each
    assert len({n for n in threads if n.startswith("geoseg-lane")}) == 1  # kept, not one a strip
    with sch.LANES.held():  # both lanes busy: nothing is borrowed
        threads.clear()
        assert list(sch.evaluate_borrowing(evaluate, batches, 2)) == batches
        assert not any(n.startswith("geoseg-lane") for n in threads)
    fail = True  # a failure on the helper thread reaches the strip, and the lanes are freed
    with pytest.raises(ValueError, match="batch 3"):
        list(sch.evaluate_borrowing(evaluate, batches, 2))
    assert sch.LANES.busy == 0


def test_borrowed_batches_blend_to_the_naive_reference(tmp_path, make_raster, ckpt, monkeypatch):
    from geoseg.io.raster import open_input
    from geoseg.run import scheduling as sch
    from geoseg.run.pipeline import predict_file

    src = make_raster(height=150, width=170, bands=3, nodata=0)
    source = open_input(src)
    data, valid = source.read(0, 0, 150, 170)
    source.close()
    monkeypatch.setattr(sch, "worker_threads", lambda: 64)  # a spare lane for every batch
    borrowed = []
    borrow = sch.Lanes.borrow
    monkeypatch.setattr(
        sch.Lanes, "borrow", lambda s, t: borrowed.append(borrow(s, t)) or borrowed[-1]
    )
    cfg = PredictConfig(tile=32, overlap=8, batch_size=2, device="cpu")
    summary = predict_file(src, tmp_path / "o.tif", ckpt, cfg)
    with rasterio.open(tmp_path / "o.tif") as ds:
        got = ds.read(1)
    assert np.array_equal(got, naive_reference(ckpt, data, valid, 32, 8, "gaussian", 2))
    assert sum(borrowed) >= summary.run // 8 and summary.evaluations == summary.run


def _borrow_in_child(queue):
    from geoseg.run import scheduling as sch

    batches = [[i] for i in range(6)]
    queue.put(list(sch.evaluate_borrowing(lambda b: b, batches, 2)) == batches)


def test_a_forked_child_borrows_on_threads_of_its_own():
    import multiprocessing

    from geoseg.run import scheduling as sch

    batches = [[i] for i in range(6)]
    assert list(sch.evaluate_borrowing(lambda b: b, batches, 2)) == batches  # helpers started
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_borrow_in_child, args=(queue,))
    child.start()
    child.join(30)
    if child.is_alive():  # waiting forever on the parent's helper threads, absent in a fork
        child.kill()
        child.join()
    assert child.exitcode == 0 and queue.get(timeout=1) is True
