"""Dask scheduling: which cluster runs the batches, and streaming their results in order.

No file is opened and no model is built here: tasks carry a picklable raster source, window
numbers and an :class:`~geoseg.engine.EngineSpec`; each worker process loads the model once
(:func:`~geoseg.engine.cached_engine`) and keeps it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from geoseg.engine import EngineSpec, available_cores, cached_engine
from geoseg.predict import BatchResult, Plan, evaluate_batch
from tilers.grid import Grid

log = logging.getLogger("geoseg.scheduling")
PROFILE_KEY = "distributed.worker.profile.enabled"
# Settings of the clusters geoseg starts. The workers' statistical profiler samples every
# thread's stack each 10 ms: measured 7% of predict's time on 2 cores (4096^2: 17.1 s vs
# 15.9 s), for a dashboard page nobody reads during a batch job. The event loop's 20 ms tick
# (which only detects a blocked loop) and the system and memory monitors' 0.1-0.5 s polls
# took 0.27 core-s of the event loop in a 4 s run, 0.16 at these intervals.
CLUSTER_CONFIG = {
    PROFILE_KEY: False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}
# Threads of the in-process cluster: one per core, at least 2 (reads overlap a GPU's compute),
# at most 4 (each runs its own batch through the model: memory grows with the count).
MAX_LOCAL_THREADS = 4
# Window pixels per Dask task (one task runs several of the plan's batches, membership
# unchanged): the scheduler's few ms per task are paid once per ~16 windows of 256^2.
TASK_PIXELS = 2**20


def local_threads(cores: int | None = None) -> int:
    """Worker threads of the in-process cluster: one process's layout, at least 2 threads."""
    return max(2, process_layout(1, cores)[0])


def cpu_threads_per_call(lanes: int, cores: int | None = None) -> int:
    """Torch threads for each of ``lanes`` concurrent model calls so that they share the cores."""
    return max(1, (cores or available_cores()) // lanes)


def process_layout(workers: int, cores: int | None = None) -> tuple[int, int]:
    """Threads per local worker process and torch threads per model call, for ``workers``.

    Each process gets its share of the cores (at least one), run as up to
    :data:`MAX_LOCAL_THREADS` threads that each make their own model calls, with the rest of
    the share as torch threads per call (see :mod:`geoseg.engine`).
    """
    share = max(1, (cores or available_cores()) // workers)
    threads = min(share, MAX_LOCAL_THREADS)
    return threads, cpu_threads_per_call(threads, cores=share)


@contextlib.contextmanager
def dask_client(
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    client: Any = None,
) -> Iterator[Any]:
    """Yield a ``distributed.Client``.

    Parameters
    ----------
    workers : int, optional
        Start a local cluster of this many worker processes (threads and torch threads per
        process: :func:`process_layout`).
    scheduler : str, optional
        Connect to an existing scheduler at this address (``tcp://host:8786``).
    threads : int, optional
        Threads of the in-process cluster used when neither is given (default
        :func:`local_threads`): each reads its batch and runs the model on it, so reads overlap
        compute, and on the CPU the model calls run side by side.
    client : distributed.Client, optional
        Use this client as it is (it is not closed).
    """
    from distributed import Client, LocalCluster

    # distributed logs cluster start/stop at INFO and task failures (which geoseg re-raises
    # as one-line errors) at ERROR; show them with -vv (debug) only.
    if not logging.getLogger("geoseg").isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    if client is not None:
        yield client
        return
    if scheduler:
        from geoseg.errors import ConfigError

        try:
            c = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"--scheduler {scheduler}: cannot connect ({exc}); check the address and that "
                "`dask scheduler` is running"
            ) from None
        with c:
            yield c
        return
    import dask

    with dask.config.set(CLUSTER_CONFIG):
        if workers:
            threads_per_worker, torch_threads = process_layout(workers)
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                env={
                    "OMP_NUM_THREADS": str(torch_threads),
                    "MKL_NUM_THREADS": str(torch_threads),
                    **{_env_name(key): str(value) for key, value in CLUSTER_CONFIG.items()},
                },
                dashboard_address=":0",
                silence_logs=logging.CRITICAL,
            )
        else:
            cluster = LocalCluster(
                n_workers=1,
                threads_per_worker=threads or local_threads(),
                processes=False,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
    with cluster, Client(cluster) as c:
        yield c


def _env_name(key: str) -> str:
    """The environment variable that sets dask config ``key`` in a new process."""
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


def batches_per_task(plan: Plan, pixels: int | None = None) -> int:
    """How many of the plan's batches one task runs: about ``pixels`` (:data:`TASK_PIXELS`)."""
    th, tw = plan.grid.tile
    batch = len(plan.batches[0]) if plan.batches else 1
    return max(1, (pixels or TASK_PIXELS) // (batch * th * tw))


def task_ranges(n_batches: int, per_task: int, threads: int) -> list[range]:
    """Split batches ``0..n_batches-1`` into consecutive tasks (guided scheduling).

    Tasks hold ``per_task`` batches while there is plenty of work, then shrink to about
    ``remaining / (2 * threads)`` (at least one batch), so that near the end no thread sits
    idle while another finishes a long task.
    """
    out, start = [], 0
    while start < n_batches:
        size = max(1, min(per_task, (n_batches - start) // (2 * threads)))
        out.append(range(start, start + size))
        start += size
    return out


def run_batch_task(
    source: Any, grid: Grid, batches: Sequence[Sequence[int]], spec: EngineSpec
) -> list[BatchResult]:
    """Dask task: read each batch of windows on the worker and run its cached model on it."""
    engine = cached_engine(spec)

    def read(win):
        return source.read(win.row, win.col, win.height, win.width)

    return [evaluate_batch(read, engine.predict_proba, grid, b) for b in batches]


def ordered_results(
    client: Any,
    source: Any,
    plan: Plan,
    spec: EngineSpec,
    in_flight: int,
    resources: dict[str, float] | None = None,
    first_batch: int = 0,
) -> Iterator[BatchResult]:
    """Submit the plan's batches, at most ``in_flight`` tasks at a time; yield results in order.

    Tasks run consecutive batches (:func:`batches_per_task`, shrinking at the end:
    :func:`task_ranges`). Bounded submission keeps memory flat: only ``in_flight`` tasks'
    probabilities exist at once, however large the raster.
    """
    pending: deque = deque()
    todo = plan.batches[first_batch:]
    tasks = iter(task_ranges(len(todo), batches_per_task(plan), total_threads(client)))

    def submit_next() -> bool:
        span = next(tasks, None)
        if span is None:
            return False
        fut = client.submit(
            run_batch_task,
            source,
            plan.grid,
            todo[span.start : span.stop],
            spec,
            pure=False,
            retries=2,
            resources=resources,
        )
        pending.append(fut)
        return True

    for _ in range(max(1, in_flight)):
        if not submit_next():
            break
    try:
        while pending:
            fut = pending.popleft()
            results = fut.result()
            fut.release()
            submit_next()
            yield from results
    finally:
        for fut in pending:
            fut.cancel()


def total_threads(client: Any) -> int:
    """Worker threads of the cluster behind ``client``."""
    info = client.scheduler_info()
    return sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1


def in_process_threads(client: Any) -> int | None:
    """Worker threads of ``client``'s cluster if its workers run in this process, else None."""
    workers = client.scheduler_info().get("workers", {})
    if workers and all(addr.startswith("inproc://") for addr in workers):
        return sum(w.get("nthreads", 1) for w in workers.values())
    return None


def dashboard_link(client: Any) -> str | None:
    """The dashboard address, when the cluster serves one."""
    try:
        return client.dashboard_link
    except (AttributeError, KeyError):
        return None
