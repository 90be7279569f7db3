"""Dask scheduling: which cluster runs the batches, and streaming their results in order.

No file is opened and no model is built here: tasks carry a picklable raster source, window
numbers and an :class:`~geoseg.model.engine.EngineSpec`; each worker process loads the model once
(:func:`~geoseg.model.engine.cached_engine`) and keeps it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from geoseg.core.backend import HOST, Backend
from geoseg.core.plan import Plan, evaluate_read
from geoseg.core.stitch import Band
from geoseg.core.strips import (
    Counts,
    Finish,
    Rows,
    Strip,
    StripResult,
    blend_strip,
    has_seam_above,
    join_seam,
    put_rows,
)
from geoseg.model.engine import EngineSpec, available_cores, cached_engine
from geoseg.run.memory import WideBandTrimmer
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
        # a local cluster's workers are reachable: results come straight from them, not through
        # the scheduler (which lives in this process too, and would handle every byte twice)
        direct = bool(workers)
        with (
            local_cluster(workers, threads, dashboard) as cluster,
            Client(cluster, direct_to_workers=direct) as c,
        ):
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


SPAWN_ENV_KEY = "distributed.nanny.pre-spawn-environ"


def worker_spawn_env() -> dict[str, str]:
    """Environment the nannies set before they start a worker process, with geoseg's malloc.

    Dask's own, with glibc's allocator settings of :mod:`geoseg.run.memory` in place of its
    64 KB trim threshold: glibc reads them only when a process starts. Variables the user's
    environment sets win (Dask's rule for this setting).
    """
    import dask
    import distributed  # noqa: F401  (its defaults join Dask's config on import)

    from geoseg.run.memory import malloc_environ

    return {**dask.config.get(SPAWN_ENV_KEY, default={}), **malloc_environ()}


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
    with dask.config.set(settings), dask.config.set({SPAWN_ENV_KEY: worker_spawn_env()}):
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


# Every task of a prediction: not cached by key (the same strip of a re-run is run again), and
# retried when a worker dies under it.
TASK_OPTIONS = {"pure": False, "retries": 2}


def run_strip_task(
    source: Any,
    grid: Grid,
    strip: Strip,
    batches: Sequence[Sequence[int]],
    blend: str,
    finish: Finish,
    spec: EngineSpec,
    later: int,
) -> StripResult:
    """Dask task: read, evaluate and blend one strip on the worker (its cached model).

    On a GPU the strip is blended there, from the probabilities the model left on it, and the
    next batch is read meanwhile. On the CPU one of the raster's last strips (fewer than the
    worker's threads come ``later`` in the plan) also evaluates batches beside its own thread
    when the worker has threads left without work (:func:`evaluate_borrowing`).
    """
    if spec.device != "cpu":
        select_worker_gpu()
    engine = cached_engine(spec)
    on_gpu = engine.device == "cuda"
    predict = engine.predict_proba_device if on_gpu else engine.predict_proba
    backend = Backend(engine.device) if on_gpu else HOST

    def read(indices):
        return source.read_windows([grid.window(i) for i in indices])

    try:
        if on_gpu:
            reads = read_ahead(read, batches)
            results = (evaluate_read(predict, b, windows) for b, windows in reads)
        else:
            threads = worker_threads()
            results = evaluate_borrowing(
                lambda b: evaluate_read(predict, b, read(b)),
                batches,
                threads if later < threads else 1,
            )
        k = engine.meta.classes
        result = blend_strip(grid, strip, results, k, blend, finish, backend)
    except Exception as exc:
        drop_hidden_context(exc)
        raise
    # the strip's cells and seams (over a tile of rows, full width) are freed: hand wide ones back
    WideBandTrimmer().released((k + 1) * 4 * grid.tile[0] * grid.width)
    return result


class Lanes:
    """Counts the strips that this process's worker threads are evaluating.

    A strip is evaluated by the worker thread that runs its task. At a raster's tail some
    worker threads have no strip left while others still evaluate theirs: a strip then borrows
    a spare *lane* and evaluates its next batch on a helper thread beside its own, so that the
    tail keeps every core busy (:func:`evaluate_borrowing`). The helper threads live as long as
    the process, like the worker's own, so each opens an input once (the handle cache is per
    thread), not once per strip.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0
        self._helpers: Any = None
        self._size = 0

    def submit(self, helpers: int, fn: Callable, *args: Any) -> Any:
        """Run ``fn(*args)`` on one of ``helpers`` helper threads; a Future of its result.

        ``helpers`` is the lanes that can be borrowed at once (the worker's threads - 1). The
        pool is made that size, so it never grows past it (a pool left larger by another
        worker size is replaced; its threads end once idle).
        """
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._helpers is None or self._size != helpers:
                old = self._helpers
                self._helpers = ThreadPoolExecutor(helpers, thread_name_prefix="geoseg-lane")
                self._size = helpers
                if old is not None:
                    old.shutdown(wait=False)
            return self._helpers.submit(fn, *args)  # not a pool another caller shut down

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Count the calling strip as one busy lane while inside."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            self.release()

    def borrow(self, total: int) -> bool:
        """Take a spare lane if fewer than ``total`` are busy; :meth:`release` it after."""
        with self._lock:
            if self._busy >= total:
                return False
            self._busy += 1
            return True

    def release(self) -> None:
        """Give a lane back."""
        with self._lock:
            self._busy -= 1

    @property
    def busy(self) -> int:
        """Lanes busy now."""
        return self._busy

    def _forget(self) -> None:
        """In a forked child: the parent's helper threads and busy lanes are not this process's."""
        self._lock = threading.Lock()
        self._busy = 0
        self._helpers = None
        self._size = 0


LANES = Lanes()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=LANES._forget)


def worker_threads() -> int:
    """Threads of the Dask worker running the calling task (1 outside a worker)."""
    from distributed import get_worker

    try:
        return get_worker().state.nthreads
    except ValueError:
        return 1


def evaluate_borrowing(
    evaluate: Callable, batches: Sequence[Sequence[int]], lanes: int
) -> Iterator[Any]:
    """``evaluate(batch)`` for each batch in order; the next one on a spare lane if there is one.

    A lane is spare while fewer than ``lanes`` are busy (1: never). Only the order of the
    results matters for blending (a window's probabilities do not depend on the thread that
    computed them), and it is kept. The engine's gate still bounds the model calls running at
    once. Borrowing is for a raster's tail only: mid-raster a lane left idle for a moment (the
    client not yet asking for the next strip) would split a strip over threads for nothing.
    """
    from concurrent.futures import wait

    def borrowed(batch):
        try:
            return evaluate(batch)
        finally:
            LANES.release()

    with LANES.held():
        i = 0
        while i < len(batches):
            ahead = None
            if i + 1 < len(batches) and LANES.borrow(lanes):
                ahead = LANES.submit(lanes - 1, borrowed, batches[i + 1])
            try:
                yield evaluate(batches[i])
            finally:
                if ahead is not None:  # never left running after the strip (its sums are gone)
                    wait([ahead])
            if ahead is not None:
                yield ahead.result()
                i += 1
            i += 1


def read_ahead(read: Callable, batches: Sequence[Sequence[int]]) -> Iterator[tuple[Any, Any]]:
    """``(batch, read(batch))`` for each batch, the next one read on a thread meanwhile.

    On a GPU the reads (and the model's host-side preparation) of the next batch then overlap
    the current batch's compute; on the CPU the worker's other threads already do.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="geoseg-read") as pool:
        ahead = pool.submit(read, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            windows = ahead.result()
            ahead = pool.submit(read, batches[i + 1]) if i + 1 < len(batches) else None
            yield batch, windows


def select_worker_gpu() -> None:
    """On a machine of several GPUs, give each local worker process its own one.

    Workers of a local cluster are named 0, 1, ...: worker ``i`` uses GPU ``i % count`` (the
    current CUDA device is a per-thread setting, so each task sets it). Elsewhere (one GPU, a
    worker started with its own ``CUDA_VISIBLE_DEVICES``, no GPU) nothing changes.
    """
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return
    from distributed import get_worker

    try:
        name = get_worker().name
    except ValueError:  # not in a worker
        return
    if isinstance(name, int) or str(name).isdigit():
        torch.cuda.set_device(int(name) % torch.cuda.device_count())


def engine_stride(spec: EngineSpec) -> int:
    """Dask task (or a local call): load the cached engine; its model's stride."""
    if spec.device != "cpu":
        select_worker_gpu()  # the model is loaded on this worker's GPU, as strip tasks use it
    try:
        return cached_engine(spec).stride
    except Exception as exc:
        drop_hidden_context(exc)
        raise


def strip_bottom(result: StripResult) -> Band | None:
    """Dask task: a strip's bottom seam, taken where the strip lies (nothing else moves)."""
    return result.bottom


def finish_strip_task(
    above: Band | None, result: StripResult, finish: Finish
) -> tuple[list[Rows], Counts]:
    """Dask task: a strip's finished rows, top to bottom, and its window counts.

    With ``above`` (the bottom seam of the strip above), the rows the two strips share are
    finished first (:func:`geoseg.core.strips.join_seam`); then come the strip's interior
    rows. It runs where ``result`` lies (the larger input, see :func:`strip_result_size`), so
    only the seam above travels between workers, and one message per strip to the client.
    """
    rows = [] if above is None else [join_seam(above, result.top, finish)]
    return [*rows, result.interior], result.counts


def register_sizes() -> None:
    """Tell Dask the size of geoseg's task results (its scheduler places tasks by them).

    Dask's default estimate of an object it does not know is ``sys.getsizeof``, a few dozen
    bytes whatever arrays it holds: a strip's finishing task could then be run where the
    small seam lies, and the whole strip moved to it.
    """
    from dask.sizeof import sizeof

    sizeof.register(Band, band_size)
    sizeof.register(Rows, lambda r: int(r.nbytes))
    sizeof.register(StripResult, strip_result_size)


def band_size(band: Band) -> int:
    """Bytes of a band's sums and weights."""
    return int(band.sums.nbytes + band.weights.nbytes)


def strip_result_size(result: StripResult) -> int:
    """Bytes of a blended strip's arrays: its interior and its seams' sums."""
    seams = [b for b in (result.top, result.bottom) if b is not None]
    return int(result.interior.nbytes) + sum(map(band_size, seams))


register_sizes()


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


@dataclass(frozen=True)
class Piece:
    """A future of one strip's finished rows ``[row0, row1)`` and its window counts."""

    future: Any
    row0: int
    row1: int


def piece_futures(
    client: Any,
    source: Any,
    plan: Plan,
    spec: EngineSpec,
    finish: Finish,
    resources: dict[str, float] | None = None,
    first_strip: int = 0,
) -> Iterator[Piece]:
    """Submit the plan's strips one by one as pieces are asked for; yield them top to bottom.

    Each strip is one task that evaluates and blends its windows where the model runs; a
    small task beside it hands its bottom seam's sums on, and its finishing task
    (:func:`finish_strip_task`) adds the seam of the strip above and returns the finished rows
    from that seam to its interior's end. So only finished rows leave the workers, and only a
    seam moves between them. ``resources`` apply to the strip tasks (the model's). The caller
    bounds how far ahead it asks, and so how many strips are in flight.
    """
    above: Any = None  # the bottom seam of the strip above
    last = len(plan.strips) - 1
    for strip in plan.strips[first_strip:]:
        later = last - strip.index
        args = (
            source,
            plan.grid,
            strip,
            plan.strip_batches(strip),
            plan.blend,
            finish,
            spec,
            later,
        )
        task = client.submit(run_strip_task, *args, resources=resources, **TASK_OPTIONS)
        done = client.submit(finish_strip_task, above, task, finish, **TASK_OPTIONS)
        top = strip.rows[0] if above is not None else strip.interior[0]
        yield Piece(done, top, strip.interior[1])
        below = plan.strips[strip.index + 1] if strip.index < last else None
        above = None
        if below is not None and has_seam_above(below):
            above = client.submit(strip_bottom, task, **TASK_OPTIONS)


def strip_pieces(
    client: Any,
    source: Any,
    plan: Plan,
    spec: EngineSpec,
    finish: Finish,
    in_flight: int,
    resources: dict[str, float] | None = None,
    first_strip: int = 0,
) -> Iterator[tuple[Rows, Counts | None]]:
    """Run the plan's strips on ``client`` (:func:`piece_futures`); yield their rows in order.

    At most ``in_flight`` strips are pending, so memory stays flat however large the raster.
    A strip's last rows (its interior) come with its window counts, the seam above it with
    ``None``. ``source`` may be a Future of a scattered source (an in-memory image, sent to the
    workers once).
    """
    pieces = piece_futures(client, source, plan, spec, finish, resources, first_strip)
    pending: deque[Piece] = deque(itertools.islice(pieces, max(1, in_flight)))
    try:
        while pending:
            piece = pending.popleft()
            rows, counts = piece.future.result()
            piece.future.release()
            pending.extend(itertools.islice(pieces, 1))
            for i, part in enumerate(rows):
                yield part, counts if i == len(rows) - 1 else None
    finally:
        pieces.close()
        cancel_pending(client, [p.future for p in pending])


def write_by_workers(
    client: Any,
    pieces: Iterator[Piece],
    plan: Plan,
    finish: Finish,
    num_classes: int,
    store: str,
    output: str,
    in_flight: int,
    chunk_rows: int,
) -> Iterator[Counts]:
    """Have the workers assemble and write a Zarr store's rows; yield their window counts.

    Each write task takes the block rows of the plan rounded up to whole chunk rows
    (``chunk_rows``), so no two tasks ever write one chunk; it gathers the pieces it needs
    (from the workers that hold them) and writes them (:func:`geoseg.io.writers.write_zarr_rows`);
    nothing but counts comes back. At most ``in_flight`` write tasks are pending. When this
    stops early the write tasks already running are waited for, so that none writes after the
    store is removed.
    """
    height, width = plan.grid.height, plan.grid.width
    size = -(-plan.block_size // chunk_rows) * chunk_rows
    waiting: deque[Piece] = deque()
    pending: deque = deque()
    try:
        for r0 in range(0, height, size):
            r1 = min(r0 + size, height)
            needed = _pieces_for(pieces, waiting, r0, r1, height)
            args = (store, output, r0, r1, width, finish, num_classes)
            pending.append(
                client.submit(write_rows_task, *args, *[p.future for p in needed], **TASK_OPTIONS)
            )
            if len(pending) >= max(1, in_flight):
                yield _take(pending)
        while pending:
            yield _take(pending)
    finally:
        pieces.close()
        _settle(client, [*pending, *[p.future for p in waiting]])


def _pieces_for(
    pieces: Iterator[Piece], waiting: deque[Piece], r0: int, r1: int, height: int
) -> list[Piece]:
    """The pieces of rows ``[r0, r1)``, asked for as far as needed; later rows' are kept.

    A piece belongs to the block rows it overlaps, and an empty one (a strip without rows of
    its own, whose window counts still count) to the block row it starts in, or the last one
    at the end.
    """
    for piece in pieces:
        waiting.append(piece)
        if piece.row1 >= r1 and r1 < height:
            break
    needed = [
        p for p in waiting if r0 <= p.row0 < r1 or p.row0 < r0 < p.row1 or p.row0 == r1 == height
    ]
    while waiting and waiting[0].row1 <= r1 and waiting[0].row0 < r1:
        waiting.popleft()
    return needed


def _take(pending: deque) -> Counts:
    future = pending.popleft()
    counts = future.result()
    future.release()
    return counts


def _settle(client: Any, futures: list) -> None:
    """Cancel what has not started, and wait (a while) for write tasks already running."""
    if not futures or getattr(client, "status", "running") != "running":
        return
    from distributed import wait

    with contextlib.suppress(Exception):
        wait(futures, timeout=SETTLE_S)
    cancel_pending(client, futures)


# How long a failed Zarr prediction waits for the workers' running writes before it removes the
# temporary store.
SETTLE_S = 30.0


def write_rows_task(
    store: str,
    output: str,
    r0: int,
    r1: int,
    width: int,
    finish: Finish,
    num_classes: int,
    *pieces: tuple[list[Rows], Counts],
) -> Counts:
    """Dask task: assemble rows ``[r0, r1)`` from their pieces and write them to a Zarr store.

    Returns the window counts of the strips whose piece starts in these rows.
    """
    from geoseg.io.writers import write_zarr_rows

    rows = finish.empty(r0, r1 - r0, width, num_classes)
    counts = Counts()
    for parts, piece_counts in pieces:
        for part in parts:
            put_rows(rows, part)
        if r0 <= parts[0].row0 < r1 or parts[0].row0 == r1:
            counts.add(piece_counts)
    write_zarr_rows(store, output, rows)
    return counts


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
