"""Dask scheduling: which cluster runs the batches, and streaming their results in order.

No file is opened and no model is built here: tasks carry a picklable raster source, window
numbers and an :class:`~geoseg.engine.EngineSpec`; each worker process loads the model once
(:func:`~geoseg.engine.cached_engine`) and keeps it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from geoseg.engine import EngineSpec, cached_engine
from geoseg.predict import BatchResult, Plan, evaluate_batch
from tilers.grid import Grid

log = logging.getLogger("geoseg.scheduling")
PROFILE_KEY = "distributed.worker.profile.enabled"


@contextlib.contextmanager
def dask_client(
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int = 3,
    client: Any = None,
) -> Iterator[Any]:
    """Yield a ``distributed.Client``.

    Parameters
    ----------
    workers : int, optional
        Start a local cluster of this many worker processes (one thread each).
    scheduler : str, optional
        Connect to an existing scheduler at this address (``tcp://host:8786``).
    threads : int
        Threads of the in-process cluster used when neither is given: one reads the next
        batches while another runs the model.
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

    # The workers' statistical profiler samples every thread's stack each 10 ms: measured 7%
    # of predict's time on 2 cores (4096^2: 17.1 s vs 15.9 s), for a dashboard page nobody
    # reads during a batch job. Clusters geoseg starts run without it.
    with dask.config.set({PROFILE_KEY: False}):
        if workers:
            # torch's intra-op threads: share the cores among the worker processes
            torch_threads = str(max(1, (os.cpu_count() or 1) // workers))
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                env={
                    "OMP_NUM_THREADS": torch_threads,
                    "MKL_NUM_THREADS": torch_threads,
                    "DASK_" + PROFILE_KEY.upper().replace(".", "__").replace("-", "_"): "False",
                },
                dashboard_address=":0",
                silence_logs=logging.CRITICAL,
            )
        else:
            cluster = LocalCluster(
                n_workers=1,
                threads_per_worker=threads,
                processes=False,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
    with cluster, Client(cluster) as c:
        yield c


def run_batch_task(
    source: Any, grid: Grid, indices: Sequence[int], spec: EngineSpec
) -> BatchResult:
    """Dask task: read one batch of windows on the worker and run its cached model."""
    engine = cached_engine(spec)

    def read(win):
        return source.read(win.row, win.col, win.height, win.width)

    return evaluate_batch(read, engine.predict_proba, grid, indices)


def ordered_results(
    client: Any,
    source: Any,
    plan: Plan,
    spec: EngineSpec,
    in_flight: int,
    resources: dict[str, float] | None = None,
    first_batch: int = 0,
) -> Iterator[BatchResult]:
    """Submit the plan's batches, at most ``in_flight`` at a time, and yield results in order.

    Bounded submission keeps memory flat: only ``in_flight`` batches of probabilities exist
    at once, however large the raster.
    """
    pending: deque = deque()
    batches = iter(plan.batches[first_batch:])

    def submit_next() -> bool:
        b = next(batches, None)
        if b is None:
            return False
        fut = client.submit(
            run_batch_task,
            source,
            plan.grid,
            b,
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
            result = fut.result()
            fut.release()
            submit_next()
            yield result
    finally:
        for fut in pending:
            fut.cancel()


def total_threads(client: Any) -> int:
    """Worker threads of the cluster behind ``client``."""
    info = client.scheduler_info()
    return sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1


def dashboard_link(client: Any) -> str | None:
    """The dashboard address, when the cluster serves one."""
    try:
        return client.dashboard_link
    except (AttributeError, KeyError):
        return None
