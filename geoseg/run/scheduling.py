"""Dask scheduling: which cluster runs the batches, and streaming their results in order.

No file is opened and no model is built here: tasks carry a picklable raster source, window
numbers and an :class:`~geoseg.model.engine.EngineSpec`; each worker process loads the model once
(:func:`~geoseg.model.engine.cached_engine`) and keeps it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from geoseg.core.plan import BatchResult, Plan, evaluate_batch
from geoseg.model.engine import EngineSpec, available_cores, cached_engine
from tilers.grid import Grid

log = logging.getLogger("geoseg.run.scheduling")
PROFILE_KEY = "distributed.worker.profile.enabled"
# Settings of the clusters geoseg starts. The workers' statistical profiler samples every
# thread's stack each 10 ms, a measurable share of predict's time, for a dashboard page nobody
# reads during a batch job; the event loop's tick (which only detects a blocked loop) and the
# system and memory monitors' polls are slowed for the same reason.
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
    the share as torch threads per call (see :mod:`geoseg.model.engine`).
    """
    share = max(1, (cores or available_cores()) // workers)
    threads = min(share, MAX_LOCAL_THREADS)
    return threads, cpu_threads_per_call(threads, cores=share)


# The in-process clusters' HTTP servers (Dask starts one per scheduler and worker, whether a
# dashboard is wanted or not) serve no pages unless --dashboard asks for them: the scheduler's
# pages are unauthenticated and show (and act on) every worker.
NO_HTTP_ROUTES = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}
WORKER_NO_HTTP = {"distributed.worker.http.routes": []}
# Everything geoseg starts listens on loopback; a free port each (never the default 8787, which
# several runs on one machine would fight over).
LOOPBACK = "127.0.0.1"
# Connecting to --scheduler: distributed's own default (30 s) is meant for clusters still
# starting; geoseg waits this long unless distributed.comm.timeouts.connect is set otherwise.
CONNECT_TIMEOUT_S = 10.0
DISTRIBUTED_CONNECT_DEFAULT_S = 30.0


@contextlib.contextmanager
def dask_client(
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    client: Any = None,
    dashboard: str | None = None,
) -> Iterator[Any]:
    """Yield a ``distributed.Client``.

    Clusters started here listen on loopback (127.0.0.1) only, on free ports, and serve no
    dashboard unless ``dashboard`` asks for one.

    Parameters
    ----------
    workers : int, optional
        Start a local cluster of this many worker processes (threads and torch threads per
        process: :func:`process_layout`); at most one per available core.
    scheduler : str, optional
        Connect to an existing scheduler at this address (``tcp://host:8786``, or
        ``tls://host:8786`` with the TLS settings of Dask's config): see
        :func:`connect_scheduler`. Every member of that cluster is trusted: Dask unpickles
        what they send.
    threads : int, optional
        Threads of the in-process cluster used when neither is given (default
        :func:`local_threads`): each reads its batch and runs the model on it, so reads overlap
        compute, and on the CPU the model calls run side by side.
    client : distributed.Client, optional
        Use this client as it is (it is not closed).
    dashboard : str, optional
        ``HOST:PORT`` for the Dask dashboard of a cluster started here (see
        :func:`geoseg.config.dashboard_address`); none by default.
    """
    from distributed import Client

    with quiet_distributed():
        if client is not None:
            yield client
            return
        if scheduler:
            if dashboard:
                log.warning("--dashboard is for clusters geoseg starts; %s serves it", scheduler)
            with connect_scheduler(scheduler) as c:
                yield c
            return
        check_workers(workers)
        with local_cluster(workers, threads, dashboard) as cluster, Client(cluster) as c:
            yield c


@contextlib.contextmanager
def quiet_distributed() -> Iterator[None]:
    """Silence distributed's logger while geoseg runs a job; its level is restored after.

    distributed logs cluster start/stop at INFO and task failures (which geoseg re-raises as
    one-line errors) at ERROR; they show with ``-vv`` (debug) only.
    """
    logger = logging.getLogger("distributed")
    before = logger.level
    if not logging.getLogger("geoseg").isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def default_scheduler(workers: int | None, scheduler: str | None) -> str | None:
    """The scheduler to use: ``--scheduler``, else Dask's own ``scheduler-address`` setting.

    Dask users set ``DASK_SCHEDULER_ADDRESS`` (or ``scheduler-address`` in Dask's YAML) once
    for every Dask tool; geoseg honours it unless ``--workers`` or ``--scheduler`` says
    otherwise, and names the setting when its value is not an address.
    """
    import dask

    from geoseg.config import check_scheduler_address
    from geoseg.errors import ConfigError

    if scheduler or workers is not None:
        return scheduler
    address = dask.config.get("scheduler-address", None)
    if not address:
        return None
    try:
        return check_scheduler_address(str(address))
    except ConfigError:
        raise ConfigError(
            f"DASK_SCHEDULER_ADDRESS (Dask's scheduler-address) is {str(address)[:80]!r}, not a "
            "scheduler address; set it to one like tcp://HOST:8786, or unset it to run locally"
        ) from None


def check_workers(workers: int | None) -> None:
    """Refuse a worker count below 1 or above the cores this process may use."""
    from geoseg.errors import ConfigError

    if workers is None:
        return
    cores = available_cores()
    if workers < 1:
        raise ConfigError(
            f"workers {workers} must be at least 1 (at most {cores}, the cores)", option="workers"
        )
    if workers > cores:
        raise ConfigError(
            f"workers {workers} exceeds the {cores} CPU core(s) this process may use; "
            f"use {cores} or fewer",
            option="workers",
        )


def local_cluster(workers: int | None, threads: int | None, dashboard: str | None) -> Any:
    """A ``LocalCluster`` on loopback: ``workers`` processes, else one in-process worker."""
    import dask
    from distributed import LocalCluster

    from geoseg.config import dashboard_address

    if dashboard:
        address = dashboard_address(dashboard)
        if not address.startswith((LOOPBACK, "localhost", "[::1]")):
            log.warning(
                "the Dask dashboard at %s has no authentication: anyone who can reach "
                "it sees and can act on this cluster",
                address,
            )
        http = {"dashboard_address": address}
        routes = WORKER_NO_HTTP
    else:
        # dashboard_address=None would mean Dask's default (:8787, every interface)
        http = {"dashboard_address": f"{LOOPBACK}:0", "scheduler_kwargs": {"dashboard": False}}
        routes = NO_HTTP_ROUTES
    settings = {**CLUSTER_CONFIG, **routes}
    with dask.config.set(settings):
        if workers:
            threads_per_worker, torch_threads = process_layout(workers)
            return LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                host=LOOPBACK,  # scheduler, nannies and workers
                env={
                    "OMP_NUM_THREADS": str(torch_threads),
                    "MKL_NUM_THREADS": str(torch_threads),
                    **{_env_name(key): str(value) for key, value in settings.items()},
                },
                silence_logs=logging.CRITICAL,
                **http,
            )
        # In-process: the comms are inproc:// (no socket). Only the HTTP servers listen; the
        # worker's binds to every interface unless given an address (it then also tries a
        # worker dashboard, which needs bokeh, on that loopback address).
        return LocalCluster(
            n_workers=1,
            threads_per_worker=threads or local_threads(),
            processes=False,
            worker_dashboard_address=f"{LOOPBACK}:0",
            silence_logs=logging.CRITICAL,
            **http,
        )


@contextlib.contextmanager
def connect_scheduler(address: str) -> Iterator[Any]:
    """A client of the scheduler at ``address``; a one-line :class:`ClusterError` otherwise.

    Connecting is bounded (:func:`connect_timeout`) including the handshake, which Dask itself
    waits on forever: a server that accepts and never answers, or answers something else (an
    HTTP server), is refused in seconds. TLS settings come from Dask's config
    (``distributed.comm.tls.*``, as ``Client(address)`` reads them).
    """
    from distributed import Client

    from geoseg.config import check_scheduler_address
    from geoseg.errors import ClusterError

    address = check_scheduler_address(address)
    seconds = connect_timeout()
    security = client_security(address)
    try:
        handshake(address, security, seconds)
        c = Client(address, security=security, timeout=seconds)
    except Exception as exc:
        raise ClusterError(
            f"--scheduler {address}: cannot connect within {seconds:g} s ({_reason(exc)}); "
            "check the address, the TLS settings and that `dask scheduler` runs there"
        ) from None
    with c:
        yield c


def connect_timeout() -> float:
    """Seconds to wait for ``--scheduler``: Dask's ``distributed.comm.timeouts.connect``.

    Its shipped default (30 s) stands for "unset" and gives :data:`CONNECT_TIMEOUT_S`; set it
    (``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=60s``) to wait longer or shorter.
    """
    import dask
    from dask.utils import parse_timedelta

    seconds = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    return CONNECT_TIMEOUT_S if seconds == DISTRIBUTED_CONNECT_DEFAULT_S else float(seconds)


def client_security(address: str) -> Any:
    """The ``Security`` that ``Client(address)`` would use (a loader's, or Dask's config)."""
    from distributed.security import Security

    with contextlib.suppress(ImportError):
        from distributed.client import _maybe_call_security_loader

        loaded = _maybe_call_security_loader(address)
        if loaded is not None:
            return loaded
    return Security()


def handshake(address: str, security: Any, seconds: float) -> None:
    """Open a comm to ``address`` and complete Dask's handshake, all within ``seconds``."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def probe() -> None:
        args = security.get_connection_args("client")
        comm = await asyncio.wait_for(connect(address, timeout=seconds, **args), seconds)
        await comm.close()

    # A thread of its own: the caller may already run an event loop (a notebook).
    with ThreadPoolExecutor(1, thread_name_prefix="geoseg-connect") as pool:
        pool.submit(asyncio.run, probe()).result()


def _reason(exc: BaseException) -> str:
    """A short one-line reason for a failed connection."""
    from distributed.comm.core import CommClosedError

    if isinstance(exc, TimeoutError) or "timed out" in str(exc).lower():
        return "no Dask scheduler answered"
    if isinstance(exc, CommClosedError):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if "ssl_context" in str(exc):  # a tls:// address without TLS settings
        return "no TLS settings: set distributed.comm.tls.ca-file, .client.cert, .client.key"
    if isinstance(exc, MemoryError | ValueError | TypeError | KeyError | AssertionError):
        return "the server does not speak Dask's protocol"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


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

    try:
        return [evaluate_batch(read, engine.predict_proba, grid, b) for b in batches]
    except Exception as exc:
        drop_hidden_context(exc)
        raise


def drop_hidden_context(exc: BaseException) -> None:
    """Forget the context that ``raise ... from None`` hides, so the error survives pickling.

    Dask sends a task's exception back pickled with its whole chain; a hidden context such as
    rasterio's ``CPLE_*Error`` cannot be unpickled, and Dask then replaces the one-line
    :class:`~geoseg.errors.GeosegError` by a bare ``Exception`` holding its repr.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__suppress_context__ and exc.__cause__ is None:
            exc.__context__ = None
        exc = exc.__cause__ or exc.__context__


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
    probabilities exist at once, however large the raster. ``source`` may be a Future of a
    scattered source (an in-memory image, sent to the workers once).
    """
    todo = plan.batches[first_batch:]
    spans = task_ranges(len(todo), batches_per_task(plan), total_threads(client))
    # the source is an argument of each call, not bound into the function: a scattered
    # in-memory image (a Future) is then resolved on the worker instead of pickled per task
    calls = ((source, plan.grid, todo[span.start : span.stop], spec) for span in spans)
    task = run_batch_task
    for results in submit_ordered(client, task, calls, in_flight, retries=2, resources=resources):
        yield from results


def submit_ordered(
    client: Any, func: Callable, calls: Iterable[tuple], in_flight: int, **submit: Any
) -> Iterator[Any]:
    """Run ``func(*args)`` for each of ``calls`` on ``client``; yield the results in order.

    At most ``in_flight`` tasks are pending at once, so memory stays flat however many calls
    there are; each result is released as soon as it is taken, and the tasks still pending
    are cancelled when the caller stops early (an error, Ctrl-C). ``submit`` goes to
    ``client.submit`` (``retries``, ``resources``).
    """
    pending: deque = deque()
    calls = iter(calls)

    def submit_next() -> None:
        args = next(calls, None)
        if args is not None:
            pending.append(client.submit(func, *args, pure=False, **submit))

    for _ in range(max(1, in_flight)):
        submit_next()
    try:
        while pending:
            fut = pending.popleft()
            result = fut.result()
            fut.release()
            submit_next()
            yield result
    finally:
        cancel_pending(client, pending)


def cancel_pending(client: Any, futures: Sequence[Any]) -> None:
    """Cancel ``futures`` unless their client is already closed (its cluster took them along).

    A generator left unfinished by a failure elsewhere is closed only when it is collected,
    often after the client has closed; cancelling then raised "IOLoop is closed", printed as a
    second traceback ("Exception ignored in generator") under the real error.
    """
    if not futures or getattr(client, "status", "running") != "running":
        return
    with contextlib.suppress(RuntimeError):  # the client's loop closing meanwhile
        client.cancel(list(futures))


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
    """The dashboard address, when the cluster serves one.

    For a cluster started in this process the address its HTTP server really listens on
    (Dask's own link names the machine's outward IP even where the server is on loopback).
    """
    server = getattr(
        getattr(getattr(client, "cluster", None), "scheduler", None), "http_server", None
    )
    host, port = getattr(server, "address", None), getattr(server, "port", None)
    if host and port and host not in ("0.0.0.0", "::"):
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/status"
    try:
        return client.dashboard_link
    except (AttributeError, KeyError):
        return None
