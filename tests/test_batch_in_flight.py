"""Rasters of a batch side by side: ``run_batch(..., in_flight=N)`` and ``--rasters-in-flight``.

The unit tests drive :func:`geoseg.run.batch.run_batch` with fake ``run_one`` functions that
synchronize on events and barriers (each wait has a timeout, so a broken pool fails the test
instead of hanging it); the end-to-end tests run the real CLI on small generated rasters.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import wait

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError
from geoseg.run.batch import BatchItem, BatchStopped, run_batch
from tests.hostile import REPO, run_cli

WAIT = 30  # seconds: far more than any step here takes; only a broken pool reaches it
TINY = ["--tile", "32", "--overlap", "8", "--block-size", "32", "--no-progress"]
CKPT_TILE = 32  # the conftest ckpt fixture's tile


def batch(*names: str) -> list[BatchItem]:
    return [BatchItem(name, f"{name}.out") for name in names]


class Recorder:
    """``on_done`` that records the order items end in, and that calls never overlap."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.inside = 0
        self.overlapped = False
        self._lock = threading.Lock()

    def __call__(self, item: BatchItem) -> None:
        with self._lock:
            self.inside += 1
            self.overlapped |= self.inside > 1
        threading.Event().wait(0.01)  # a window for a second call to overlap, if it could
        self.order.append(item.input)
        with self._lock:
            self.inside -= 1


# --------------------------------------------------------------------------------------------
# run_batch
# --------------------------------------------------------------------------------------------


def test_two_items_run_at_the_same_time():
    both = threading.Barrier(2, timeout=WAIT)  # passes only when both items are inside at once
    threads = set()

    def run_one(item):
        threads.add(threading.current_thread().name)
        both.wait()
        return item.input.upper()

    items = run_batch(batch("a", "b"), run_one, in_flight=2)
    assert [it.summary for it in items] == ["A", "B"]
    assert all(name.startswith("geoseg-raster") for name in threads) and len(threads) == 2


def test_at_most_in_flight_items_run_at_once():
    lock, inside, most = threading.Lock(), [0], [0]
    two_in = threading.Barrier(2, timeout=WAIT)

    def run_one(item):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        if item.input in ("a", "b"):
            two_in.wait()  # the first two overlap for sure
        with lock:
            inside[0] -= 1

    run_batch(batch("a", "b", "c", "d", "e"), run_one, in_flight=2)
    assert most[0] == 2


def test_a_failing_item_is_recorded_and_the_others_finish():
    both = threading.Barrier(2, timeout=WAIT)

    def run_one(item):
        if item.input == "bad":
            both.wait()  # fails while the other is running
            raise InputError("bad is not a raster; check the file")
        if item.input == "good":
            both.wait()
        return "ok"

    done = Recorder()
    items = run_batch(batch("bad", "good", "later"), run_one, done, in_flight=2)
    assert [(it.summary, it.error) for it in items] == [
        (None, "bad is not a raster; check the file"),
        ("ok", None),
        ("ok", None),
    ]
    assert sorted(done.order) == ["bad", "good", "later"] and not done.overlapped


def test_a_slow_item_does_not_hold_back_a_later_one():
    later_done = threading.Event()

    def run_one(item):
        if item.input == "slow":
            assert later_done.wait(WAIT), "the slow item held the batch back"
        return item.input

    def on_done(item):
        done(item)
        if item.input == "fast2":
            later_done.set()

    done = Recorder()
    items = run_batch(batch("slow", "fast1", "fast2"), run_one, on_done, in_flight=2)
    assert done.order == ["fast1", "fast2", "slow"]  # reported as they end
    assert [it.input for it in items] == ["slow", "fast1", "fast2"]  # returned in input order
    assert [it.summary for it in items] == ["slow", "fast1", "fast2"]
    assert not done.overlapped


def test_on_done_calls_never_overlap():
    start = threading.Barrier(4, timeout=WAIT)  # all four end at about the same moment
    done = Recorder()
    run_batch(batch("a", "b", "c", "d"), lambda item: start.wait(), done, in_flight=4)
    assert sorted(done.order) == ["a", "b", "c", "d"] and not done.overlapped


def test_one_in_flight_is_sequential_in_the_callers_thread():
    events: list[str] = []
    caller = threading.current_thread()

    def run_one(item):
        assert threading.current_thread() is caller
        events.append(f"run {item.input}")
        if item.input == "b":
            raise InputError("b is corrupt")
        return item.input

    items = run_batch(batch("a", "b", "c"), run_one, lambda it: events.append(f"done {it.input}"))
    assert events == ["run a", "done a", "run b", "done b", "run c", "done c"]
    assert [it.error for it in items] == [None, "b is corrupt", None]


def test_in_flight_must_be_positive():
    with pytest.raises(ValueError, match="in_flight 0"):
        run_batch(batch("a"), lambda item: None, in_flight=0)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupt_or_crash_in_one_item_stops_the_batch(error):
    """Running items are told to stop and waited for, pending ones never start, it propagates."""
    stop = threading.Event()
    started: list[str] = []
    other_running = threading.Event()
    stopped_cleanly = threading.Event()

    def run_one(item):
        started.append(item.input)
        if item.input == "a":
            assert other_running.wait(WAIT)
            raise error("boom")
        other_running.set()
        assert stop.wait(WAIT), "the running item was not told to stop"
        stopped_cleanly.set()  # its cleanup ran before run_batch returned
        raise BatchStopped

    done = Recorder()
    with pytest.raises(error, match="boom"):
        run_batch(batch("a", "b", "c", "d"), run_one, done, in_flight=2, stop=stop)
    assert sorted(started) == ["a", "b"] and stopped_cleanly.is_set()
    assert done.order == []  # neither the crashed nor the stopped item is reported


def test_the_crash_goes_on_even_when_a_stopped_item_finishes_first(monkeypatch):
    """The item told to stop can finish before the one that crashed: the crash is the error."""
    import geoseg.run.batch as batch_module

    stop = threading.Event()

    def stopped_one_first(futures):
        wait(futures, timeout=WAIT)
        yield from [futures[1], futures[0], *futures[2:]]

    b_running = threading.Event()

    def run_one(item):
        if item.input == "a":
            assert b_running.wait(WAIT)
            raise RuntimeError("boom")
        b_running.set()
        assert stop.wait(WAIT), "the running item was not told to stop"
        raise BatchStopped

    monkeypatch.setattr(batch_module, "as_completed", stopped_one_first)
    with pytest.raises(BaseException) as info:  # noqa: PT011  (which one is the point)
        run_batch(batch("a", "b", "c"), run_one, in_flight=2, stop=stop)
    assert info.type is RuntimeError


def test_ctrl_c_in_the_caller_stops_the_running_items(monkeypatch):
    """Ctrl-C reaches the main thread, which only waits: it stops the pool and propagates."""
    import geoseg.run.batch as batch_module

    stop = threading.Event()
    running = threading.Barrier(3, timeout=WAIT)  # two items and the test
    real = batch_module.as_completed

    def interrupted_wait(futures):
        running.wait()  # both items are inside run_one
        raise KeyboardInterrupt  # as the signal handler raises it in the waiting main thread
        yield from real(futures)

    def run_one(item):
        running.wait()
        assert stop.wait(WAIT), "the running item was not told to stop"
        raise BatchStopped

    monkeypatch.setattr(batch_module, "as_completed", interrupted_wait)
    with pytest.raises(KeyboardInterrupt) as info:
        run_batch(batch("a", "b", "c"), run_one, in_flight=2, stop=stop)
    assert not isinstance(info.value, BatchStopped)  # the caller's own interrupt goes on


def test_keyboard_interrupt_propagates_with_one_in_flight():
    def run_one(item):
        if item.input == "b":
            raise KeyboardInterrupt
        return item.input

    items = batch("a", "b", "c")
    with pytest.raises(KeyboardInterrupt):
        run_batch(items, run_one)
    assert [it.summary for it in items] == ["a", None, None]


# --------------------------------------------------------------------------------------------
# the option
# --------------------------------------------------------------------------------------------


def test_rasters_in_flight_is_checked():
    from geoseg.config import PredictConfig
    from geoseg.errors import ConfigError

    assert PredictConfig().rasters_in_flight == 2
    for bad, words in ((0, "must be positive"), (65, "1 to 64"), (True, "expected int")):
        with pytest.raises(ConfigError, match=words) as info:
            PredictConfig(rasters_in_flight=bad)
        assert info.value.option == "rasters_in_flight"


def test_a_bad_flag_value_names_the_flag(tmp_path, ckpt, make_raster):
    scene = make_raster(height=32, width=32, name="scene.tif")
    res = run_cli("predict", scene, "--output-dir", tmp_path / "o", "--model", ckpt, *TINY,
                  "--rasters-in-flight", "0")  # fmt: skip
    assert res.code == 2 and "Invalid value for '--rasters-in-flight'" in res.err, res.err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture
def scenes(make_raster):
    return [
        make_raster(height=96, width=80, name="a.tif", seed=1),
        make_raster(height=70, width=100, name="b.tif", seed=2),
        make_raster(height=64, width=64, name="c.tif", seed=3),
    ]


def read_all(path):
    with rasterio.open(path) as src:
        profile = dict(src.profile)
        return src.read(), profile, src.tags()


def overlap_spy(monkeypatch):
    """Wrap ``predict_file`` so that the batch's first two rasters must run at the same time.

    Returns the names of the threads each raster ran on.
    """
    import geoseg.run.pipeline as pipeline

    real, first_two, threads = pipeline.predict_file, threading.Barrier(2, timeout=WAIT), []

    def predict_file(src, *args, **kw):
        threads.append(threading.current_thread().name)
        if len(threads) <= 2:
            first_two.wait()
        return real(src, *args, **kw)

    monkeypatch.setattr(pipeline, "predict_file", predict_file)
    return threads


def test_side_by_side_writes_what_one_at_a_time_writes(tmp_path, scenes, ckpt, monkeypatch):
    outputs = {}
    for n in ("1", "2"):
        out = tmp_path / f"out{n}"
        threads = overlap_spy(monkeypatch) if n == "2" else []
        res = run_cli("predict", *scenes, "--output-dir", out, "--model", ckpt, *TINY,
                      "--rasters-in-flight", n)  # fmt: skip
        assert res.code == 0, res.err
        assert "3 of 3 rasters done, 0 failed" in res.out, res.out
        outputs[n] = out
    assert len(threads) == 3 and all(t.startswith("geoseg-raster") for t in threads), threads
    names = sorted(p.name for p in outputs["1"].iterdir())
    assert names == sorted(p.name for p in outputs["2"].iterdir())
    assert {"a_classes.tif", "b_classes.tif", "c_classes.tif"} <= set(names)
    for name in names:
        one, two = outputs["1"] / name, outputs["2"] / name
        if name.endswith(".tif"):
            a1, p1, t1 = read_all(one)
            a2, p2, t2 = read_all(two)
            assert np.array_equal(a1, a2) and p1 == p2 and t1 == t2, name
        # the GeoTIFF writer is deterministic (no timestamps), so the files are identical too
        assert one.read_bytes() == two.read_bytes(), name


def test_a_corrupt_raster_fails_alone_side_by_side(tmp_path, scenes, ckpt):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(scenes[0].read_bytes()[:300])
    out = tmp_path / "out"
    res = run_cli("predict", scenes[0], bad, *scenes[1:], "--output-dir", out, "--model", ckpt,
                  *TINY, "--rasters-in-flight", "2")  # fmt: skip
    assert res.code == 1, res.err
    assert "bad.tif: FAILED" in res.out and "3 of 4 rasters done, 1 failed" in res.out, res.out
    assert "Traceback" not in res.err, res.err
    tifs = sorted(p.name for p in out.iterdir() if p.suffix == ".tif")
    assert tifs == ["a_classes.tif", "b_classes.tif", "c_classes.tif"]
    for name in tifs:
        with rasterio.open(out / name) as src:
            assert src.read(1).size > 0


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_every_raster_in_flight_and_resume_finishes_them(
    tmp_path, make_raster, ckpt, signum, code
):
    """Only the main thread sees the signal; both running rasters must still stop cleanly."""
    from geoseg.run.resume import partial_dir

    scenes = [make_raster(height=768, width=512, name=f"s{i}.tif", seed=i) for i in range(3)]
    out = tmp_path / "out"
    run = [*scenes, "--output-dir", out, "--model", ckpt, *TINY, "--rasters-in-flight", "2"]
    progress = [partial_dir(out / f"s{i}_classes.tif") / "progress.json" for i in range(2)]
    # Ctrl-C as in an interactive shell (a background CI job inherits SIGINT ignored)
    child = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    proc = subprocess.Popen(
        [sys.executable, "-c", child + "import cli; cli.main()", "predict", *map(str, run)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not all(p.exists() for p in progress) and time.monotonic() < deadline:
            assert proc.poll() is None, f"predict ended before the signal:\n{proc.stderr.read()}"
            time.sleep(0.02)
        proc.send_signal(signum)
        stdout, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and "finished rasters are kept" in lines[0], err
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    for i, kept in enumerate(progress):  # each kept its progress, or finished just in time
        assert kept.exists() or (out / f"s{i}_classes.tif").exists(), (stdout, err, listing)
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert not (out / "s2_classes.tif").exists()  # never started
    res = run_cli("predict", *run, "--resume")
    assert res.code == 0 and "3 of 3 rasters done" in res.out, res.err
    assert not any(p.parent.exists() for p in progress)
