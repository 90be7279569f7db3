"""The engine's concurrency: how many model calls run at once, and with how many threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from geoseg.model.engine import CallGate, Engine, available_cores, kept_torch_threads


def _max_inside(enter, callers: int, hold: float = 0.05) -> int:
    """Run ``callers`` threads through ``enter`` (a context factory); the most inside at once."""
    inside, most, lock = 0, 0, threading.Lock()

    def call():
        nonlocal inside, most
        with enter():
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(hold)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return most


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_call_gate_admits_at_most_its_limit(limit):
    gate = CallGate(lambda: limit)
    assert _max_inside(lambda: gate, callers=6) == limit


def _concurrent_forwards(engine: Engine, callers: int) -> int:
    """The most forward passes of ``engine`` running at once when ``callers`` threads call it."""
    inside, most, lock = 0, 0, threading.Lock()
    forward = engine.model.forward

    def slow_forward(x):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)
        try:
            return forward(x)
        finally:
            with lock:
                inside -= 1

    engine.model.forward = slow_forward
    x = np.full((1, 3, 32, 32), 100, np.float32)
    threads = [threading.Thread(target=engine.predict_proba, args=(x,)) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return most


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to run calls side by side")
def test_one_thread_per_call_runs_a_call_per_core(ckpt):
    engine = Engine.from_checkpoint(ckpt, device="cpu", threads=1)
    with kept_torch_threads():
        assert _concurrent_forwards(engine, callers=4) == min(4, available_cores())


def test_all_cores_per_call_runs_one_call_at_a_time(ckpt):
    engine = Engine.from_checkpoint(ckpt, device="cpu", threads=available_cores())
    with kept_torch_threads():
        assert _concurrent_forwards(engine, callers=3) == 1


def test_threads_are_set_in_the_calling_thread_and_restored_after(ckpt):
    engine = Engine.from_checkpoint(ckpt, device="cpu", threads=1)
    before = torch.get_num_threads()
    seen = []

    def call():
        engine.predict_proba(np.zeros((1, 3, 32, 32), np.float32))
        seen.append(torch.get_num_threads())

    with kept_torch_threads():
        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
        assert seen == [1]
        assert torch.get_num_threads() == before  # the caller's thread count is its own
    fresh = []
    probe = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    assert fresh == [before]  # the process default is back for threads started later


def test_results_do_not_depend_on_concurrency(ckpt):
    x = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64)).astype(np.float32)
    serial = Engine.from_checkpoint(ckpt, device="cpu", threads=available_cores())
    parallel = Engine.from_checkpoint(ckpt, device="cpu", threads=1)
    out = [None, None]

    def call(i):
        out[i] = parallel.predict_proba(x)

    with kept_torch_threads():
        expected = serial.predict_proba(x)
        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for got in out:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
