"""``geoseg predict`` end to end: reader -> Dask batches -> stitching -> writer.

This is the only module that knows about files, the model checkpoint and the scheduler at
once; it wires :mod:`geoseg.io`, :mod:`geoseg.run.scheduling` and :mod:`geoseg.core.plan` together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.config import PredictConfig
from geoseg.core.plan import OutputBlock, Plan, assemble_blocks, batch_bytes, class_dtype, make_plan
from geoseg.core.strips import Counts, Finish
from geoseg.errors import ConfigError
from geoseg.io.files import refuse_inputs
from geoseg.model.checkpoint import ModelMeta, read_meta
from geoseg.model.engine import EngineSpec, kept_torch_threads, resolve_device
from geoseg.run.resume import check_partial_files, partial_dir, partial_run
from tilers.grid import as_pair

log = logging.getLogger("geoseg.run.pipeline")

Progress = Callable[[int, int], None]


@dataclass
class Summary:
    """What one prediction run did."""

    input: str
    output: str
    height: int
    width: int
    windows: int
    run: int
    skipped: int
    evaluations: int
    seconds: float
    peak_rss: int
    batch_size: int
    tile: tuple[int, int]

    @property
    def megapixels(self) -> float:
        """Raster size in Mpx."""
        return self.height * self.width / 1e6

    def line(self) -> str:
        """The one-line summary printed at the end of ``geoseg predict``."""
        rate = self.megapixels / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"{self.width}x{self.height} px ({self.megapixels:.1f} Mpx): "
            f"{self.run} windows run, {self.skipped} skipped of {self.windows} in the grid, "
            f"{self.evaluations} evaluations; {self.seconds:.1f} s, {rate:.2f} Mpx/s, "
            f"peak memory {self.peak_rss / 2**30:.2f} GiB -> {self.output}"
        )


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (bytes).

    On Linux this is ``VmHWM``, the high-water mark of this program's own memory. ``ru_maxrss``
    is not: a process started with fork/vfork + exec inherits its parent's peak (Linux carries
    it over at exec), so a ``geoseg`` started from a big Python process would report the
    parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def default_overlap(overlap: int | None, tile: int) -> int:
    """The given overlap, or 128 px capped at a quarter of the tile."""
    return overlap if overlap is not None else min(128, tile // 4)


# Window pixels per model call on the CPU. Convolutions there are cache-bound: per window, the
# demo model ran fastest at 2 x 256^2 and 1 x 512^2 windows per call (2-core machine, 448
# windows of 256^2: batch 1 / 2 / 4 / 8 / 16 took 4.6 / 4.0 / 5.0 / 6.6 / 7.2 s).
CPU_CALL_PIXELS = 2**17
GPU_BATCH = 16


def auto_batch_size(device: str, tile: int | tuple[int, int]) -> int:
    """Windows per model call when ``--batch-size`` is not given.

    16 on a GPU; on the CPU as many windows as fit in :data:`CPU_CALL_PIXELS` (at least one).
    """
    if device == "cuda":
        return GPU_BATCH
    th, tw = as_pair(tile, "tile")
    return max(1, CPU_CALL_PIXELS // (th * tw))


class BackgroundWriter:
    """Write finished blocks on one thread so that writes overlap reads and compute.

    After the last block of a block row is written, the writer is flushed and
    ``on_row_done(rows_done, digest)`` records the durable progress with the block row's digest
    (of the bytes written; ``--resume`` checks it against the files).
    """

    def __init__(
        self,
        writer: Any,
        maxsize: int = 4,
        width: int | None = None,
        on_row_done: Callable[[int, str], None] | None = None,
    ) -> None:
        self._writer = writer
        self._width = width
        self._on_row_done = on_row_done
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="geoseg-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            block = self._queue.get()
            if block is None:
                return
            if self._error is not None:
                continue
            try:
                w = block.window
                self._writer.write(
                    w.row, w.col, block.classes, block.probs, confidence=block.confidence
                )
                if self._on_row_done is not None and w.col_stop == self._width:
                    self._writer.flush()
                    self._on_row_done(w.row_stop, self._writer.take_row_digest())
            except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
                self._error = exc

    def put(self, block: OutputBlock) -> None:
        """Queue a block (blocks when the queue is full: back-pressure)."""
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self) -> None:
        """Wait for every queued block to be written; re-raise a write error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def engine_spec(
    checkpoint: str | os.PathLike, device: str, cfg: PredictConfig, client: Any
) -> EngineSpec:
    """The engine recipe of a run on ``client``.

    When the model runs on the CPU in this process, each worker thread runs its own batches
    through the model, and the threads share the cores: torch threads per call =
    cores // worker threads (see :mod:`geoseg.model.engine`). Elsewhere (GPU, worker processes, a
    remote cluster) torch's own setting is kept.
    """
    from geoseg.run.scheduling import cpu_threads_per_call, in_process_threads

    lanes = in_process_threads(client) if device == "cpu" else None
    threads = cpu_threads_per_call(lanes) if lanes else None
    path = str(Path(checkpoint).resolve())
    return EngineSpec(path, device, cfg.precision, cfg.tta, threads, cfg.compile)


def model_stride(client: Any, spec: EngineSpec, resources: dict[str, float] | None) -> int:
    """Load the model once before any strip is scheduled, and return its stride.

    A corrupt checkpoint or a bad precision then fails at once, as one error. In-process
    workers share this process's cached engine, so it is loaded here; worker processes load
    their own, so one of them loads it (this process never needs the model).
    """
    from geoseg.run.scheduling import engine_stride, in_process_threads

    if in_process_threads(client) is not None:
        return engine_stride(spec)
    return client.submit(engine_stride, spec, pure=False, resources=resources).result()


def warn_stride(plan: Plan, stride: int) -> None:
    """Warn once per run when the tile is not a multiple of the model's stride."""
    if any(t % stride for t in plan.grid.tile):
        log.warning(
            "tile %s is not a multiple of the model's stride %d: each window is padded "
            "(reflect) to the next multiple inside the engine and cropped back",
            "x".join(map(str, plan.grid.tile)),
            stride,
        )


def write_blocks(
    blocks: Iterable[OutputBlock],
    writer: Any,
    width: int,
    on_row_done: Callable[[int, str], None] | None = None,
) -> None:
    """Write blocks on a background thread while the next ones are computed."""
    bg = BackgroundWriter(writer, width=width, on_row_done=on_row_done)
    try:
        for block in blocks:
            bg.put(block)
    finally:
        bg.close()


def warn_georeference(info: Any) -> None:
    """Say once what georeference the class map gets when the input has no transform/CRS."""
    if info.gcps:
        log.warning(
            "%s is georeferenced by %d ground control points only; they are carried over to "
            "the class map (no transform)",
            info.path,
            len(info.gcps),
        )
    elif not info.georeferenced:
        log.warning(
            "%s has no georeference; the class map is written without one as well", info.path
        )


def warn_value_range(source: Any, meta: ModelMeta) -> None:
    """Warn once when the input's values (a sample) are far from those the model trained on."""
    from geoseg.io.raster import sample_range
    from geoseg.model.checkpoint import value_range_mismatch

    if meta.value_range is None:
        return  # a checkpoint of before the range was recorded: nothing to compare with
    message = value_range_mismatch(meta, sample_range(source), source.info.path)
    if message:
        log.warning("%s", message)


def refuse_unverified(stamped: list) -> None:
    """Refuse ``--resume`` of an input whose content GDAL cannot identify (no ETag, no date)."""
    from geoseg.io.files import unverified

    urls = unverified(stamped)
    if urls:
        raise ConfigError(
            f"--resume cannot check that {urls[0]} is unchanged since the killed run (GDAL "
            "reports no ETag or Last-Modified for it); start over with --overwrite"
        )


def check_memory(plan: Plan, bands: int, classes: int, device: str) -> None:
    """Refuse a tile/batch whose one batch alone would not fit in the memory available now."""
    import psutil

    th, tw = plan.grid.tile
    need = batch_bytes(th, tw, len(plan.batches[0]), bands, classes, plan.grid.width, device)
    available = psutil.virtual_memory().available
    if need > available:
        raise ConfigError(
            f"tile {th}x{tw} with batch_size {len(plan.batches[0])} needs about "
            f"{need / 2**30:.1f} GiB for one batch, more than the {available / 2**30:.1f} GiB "
            "available; use a smaller --tile or --batch-size",
            option="tile",
        )


def check_outputs(
    output_path: Any, inputs: list[Any], cfg: PredictConfig, overwrite: bool, resume: bool
) -> bool:
    """Refuse the output before any work (see :func:`geoseg.io.writers.check_output`).

    The rasters among ``inputs`` count with the files GDAL reads for them (sidecars, a VRT's
    sources). Returns whether the output is durable (a GeoTIFF, written through a resumable
    partial folder, which must not hold an input either).
    """
    from geoseg.io.raster import raster_files
    from geoseg.io.writers import check_output, output_format

    inputs = [*raster_files(inputs[0]), *inputs[1:]]
    check_output(
        output_path,
        overwrite,
        inputs,
        probabilities=cfg.probabilities,
        confidence=cfg.confidence_measure is not None,
        creation_options=cfg.creation_options,
    )
    durable = output_format(output_path) == "gtiff"
    if resume and not durable:
        raise ConfigError(f"--resume supports GeoTIFF outputs only, not {output_path}")
    if durable:
        refuse_inputs(partial_dir(output_path), inputs, "partial folder")
    return durable


def verify_partial(run: Any, probabilities: bool, confidence: bool = False) -> None:
    """Refuse to resume from partial files that are not what ``run``'s progress records."""
    from geoseg.io.gdal import sidecar_path
    from geoseg.io.writers import partial_files, read_pam, rows_digest

    files = partial_files(run.directory, probabilities, confidence)
    check_partial_files(files)
    for path in files:
        read_pam(sidecar_path(path))
    run.verify(lambda row0, row1: rows_digest(files, row0, row1, run.block_size))


ZARR_METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


def input_data_files(path: Any) -> list[Path]:
    """The files whose stamps identify an input: the raster file, or a Zarr store's metadata.

    Sidecars are left out (a viewer writing statistics into ``.aux.xml`` changes no pixel), and
    so are a store's chunk files (hundreds of thousands of them in a large store). A GDAL URL
    is its own entry (GDAL's identity of it, see :func:`geoseg.io.files.stamps`); a STAC input
    lists its file and its raster assets.
    """
    from geoseg.io.raster import is_gdal_url
    from geoseg.io.stac import is_stac_path, stac_data_files

    if is_stac_path(path):
        return stac_data_files(os.fspath(path))  # type: ignore[return-value]
    if is_gdal_url(path):
        return [os.fspath(path)]  # type: ignore[list-item]  # Path() would mangle the URL
    p = Path(path)
    if not p.is_dir():
        return [p]
    return sorted(q for name in ZARR_METADATA for q in (*p.glob(name), *p.glob(f"*/{name}")))


def job_identity(
    input_path: Any, checkpoint: Any, plan: Plan, info: Any, device: str, cfg: PredictConfig
) -> dict[str, Any]:
    """What a resumable run computes: a resumed job must match it exactly.

    The input's files are identified by size and modification time (a rewritten scene is not
    resumed into), the checkpoint by the digest of its files (retrained into the same folder,
    it is another model). JSON-normalized, as it is compared with what ``progress.json`` holds.
    """
    from geoseg.io.files import content_digest, stamps
    from geoseg.io.raster import is_gdal_url
    from geoseg.model.checkpoint import GEOSEG_FILE, SMP_CONFIG, WEIGHTS

    ckpt = Path(checkpoint)
    remote = is_gdal_url(input_path)  # Path() would mangle a URL
    identity = {
        "input": os.fspath(input_path) if remote else str(Path(input_path).resolve()),
        "input_options": [cfg.assets, cfg.scale, cfg.offset],
        "input_files": stamps(input_data_files(input_path)),
        "checkpoint": str(ckpt.resolve()),
        "checkpoint_digest": content_digest([ckpt / f for f in (GEOSEG_FILE, SMP_CONFIG, WEIGHTS)]),
        "plan": [
            info.height,
            info.width,
            *plan.grid.tile,
            *plan.grid.overlap,
            len(plan.batches[0]),
            plan.blend,
            plan.block_size,
        ],
        # the summation order: strips of this many grid rows, summed strip by strip
        "strips": ["per-strip-v1", _strip_rows(plan)],
        "engine": [device, cfg.precision, cfg.tta, cfg.bands, cfg.compile],
        "output": [
            cfg.cog,
            cfg.probabilities,
            cfg.confidence_measure,
            cfg.nodata,
            cfg.creation_options,
        ],
    }
    return json.loads(json.dumps(identity))


def _strip_rows(plan: Plan) -> int:
    """Grid rows of the plan's first strip (the others follow from it and the grid)."""
    g0, g1 = plan.strips[0].grid_rows if plan.strips else (0, 0)
    return g1 - g0


def output_spec(info: Any, meta: ModelMeta, cfg: PredictConfig) -> Any:
    """The class map's geometry and legend: the input's grid, the model's classes."""
    from geoseg.io.writers import OutputSpec

    return OutputSpec(
        height=info.height,
        width=info.width,
        crs_wkt=info.crs_wkt,
        transform=info.transform,
        georeferenced=info.georeferenced,
        class_names=list(meta.class_names),
        colours=list(meta.colours),
        cog=cfg.cog,
        probabilities=cfg.probabilities,
        gcps=info.gcps,
        gcp_crs_wkt=info.gcp_crs_wkt,
        nodata_value=cfg.nodata,
        confidence=cfg.confidence_measure,
        creation_options=cfg.creation_options or {},
    )


def predict_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    checkpoint: str | os.PathLike,
    config: PredictConfig | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    client: Any = None,
    resume: bool = False,
    other_inputs: Iterable[str | os.PathLike] = (),
) -> Summary:
    """Segment one raster into a georeferenced class map.

    Parameters
    ----------
    input_path : path-like
        Any rasterio-readable raster or a ``.zarr`` store.
    output_path : path-like
        ``.tif``/``.tiff`` (GeoTIFF, ``config.cog`` for a COG) or ``.zarr``.
    checkpoint : path-like
        A geoseg checkpoint directory.
    config : PredictConfig
        Tiling, blending, scheduling and engine options.
    overwrite : bool
        Replace an existing output.
    progress : callable, optional
        ``progress(windows_done, windows_total)`` after each batch.
    client : distributed.Client, optional
        Run on this client instead of creating one.
    resume : bool
        Continue a killed run of the same job from its last durable block row (GeoTIFF).
    other_inputs : iterable of path-like
        Further files the command reads (a config file, the other rasters of a batch): no
        output may be one of them.

    Returns
    -------
    Summary

    Notes
    -----
    Process-wide settings (:func:`geoseg.runtime.configure`: GDAL's block cache, glibc's
    allocator) are applied by the CLI and the Python API before the first raster is read.
    """
    cfg = config or PredictConfig()
    t0 = time.perf_counter()
    job = prepare(input_path, output_path, checkpoint, cfg, overwrite, resume, other_inputs)
    try:
        counts = run_job(job, cfg, client, progress, overwrite, resume)
    finally:
        job.source.close()
    return _summary(job, counts, time.perf_counter() - t0)


def _summary(job: Job, stats: Counts, seconds: float) -> Summary:
    return Summary(
        input=str(job.input_path),
        output=str(job.output_path),
        height=job.info.height,
        width=job.info.width,
        windows=len(job.plan.grid),
        run=stats.run,
        skipped=stats.skipped,
        evaluations=stats.run,  # each window once: strips share partial sums, not windows
        seconds=seconds,
        peak_rss=peak_rss_bytes(),
        batch_size=job.plan.batch_size,
        tile=job.plan.grid.tile,
    )


@dataclass
class Job:
    """A checked prediction job: its input, model, plan and output, before any work is done."""

    input_path: str | os.PathLike
    output_path: str | os.PathLike
    checkpoint: str | os.PathLike
    source: Any
    info: Any
    meta: ModelMeta
    device: str
    plan: Plan
    dtype: str
    nodata: int
    durable: bool
    identity: dict[str, Any]


def prepare(
    input_path, output_path, checkpoint, cfg: PredictConfig, overwrite, resume, other_inputs
) -> Job:
    """Check every output against every input, open the input and plan the job.

    Everything that can be refused is refused here, before a cluster starts.
    """
    from geoseg.io.raster import open_input

    inputs = [input_path, checkpoint, *other_inputs]
    durable = check_outputs(output_path, inputs, cfg, overwrite, resume)
    meta = read_meta(checkpoint)
    source = open_input(input_path, cfg.bands, cfg.assets, cfg.scale, cfg.offset)
    try:
        info = source.info
        meta.check_bands(info.count, str(input_path))
        warn_georeference(info)
        warn_value_range(source, meta)
        device = resolve_device(cfg.device)
        plan = _plan(info, meta, cfg, device)
        dtype, nodata = class_dtype(meta.classes, cfg.nodata)
        identity = job_identity(input_path, checkpoint, plan, info, device, cfg) if durable else {}
        if resume:
            refuse_unverified(identity.get("input_files", []))
    except BaseException:
        source.close()
        raise
    return Job(
        input_path, output_path, checkpoint, source, info, meta, device, plan, dtype, nodata,
        durable, identity,
    )  # fmt: skip


def _plan(info: Any, meta: ModelMeta, cfg: PredictConfig, device: str) -> Plan:
    """The window grid and batches of this job, refused when one batch cannot fit memory."""
    tile = cfg.tile or meta.tile_size
    plan = make_plan(
        info.height,
        info.width,
        tile=tile,
        overlap=default_overlap(cfg.overlap, tile),
        batch_size=cfg.batch_size or auto_batch_size(device, tile),
        blend=cfg.blend,
        block_size=cfg.block_size,
    )
    check_memory(plan, info.count, meta.classes, device)
    return plan


def run_job(
    job: Job, cfg: PredictConfig, client: Any, progress: Progress | None, overwrite, resume
) -> Counts:
    """Run the job's strips on Dask and write their finished rows; return the window counts."""
    from geoseg.run.scheduling import dask_client

    counts = Counts()
    with (
        dask_client(cfg.workers, cfg.scheduler, client=client) as dclient,
        kept_torch_threads(),
    ):
        spec = engine_spec(job.checkpoint, job.device, cfg, dclient)
        warn_stride(job.plan, model_stride(dclient, spec, _resources(cfg, job.device)))
        claim = (
            partial_run(
                job.output_path, job.identity, resume, job.info.height, job.plan.block_size,
                overwrite,
            )
            if job.durable
            else None
        )  # fmt: skip
        with claim or contextlib.nullcontext() as run:
            _write(job, cfg, dclient, spec, run, resume, overwrite, counts, progress)
    return counts


def _write(job: Job, cfg, dclient, spec, run, resume, overwrite, counts, progress) -> None:
    """Stream the job's finished rows into its writer, from the resume point of ``run`` on.

    A GeoTIFF is written here, by one writer thread that receives class ids; a Zarr store's
    chunks are written by the workers (:func:`geoseg.run.scheduling.write_by_workers`).
    """
    from geoseg.io.writers import ZarrWriter, open_writer
    from geoseg.run.scheduling import total_threads

    start_row = run.start_row if run else 0
    if resume:
        verify_partial(run, cfg.probabilities, cfg.confidence_measure is not None)
        log.warning("resuming %s at row %d of %d", job.output_path, start_row, job.info.height)
    finish = Finish(job.nodata, job.dtype, cfg.probabilities, cfg.confidence_measure)
    in_flight = cfg.prefetch * total_threads(dclient)
    total = len(job.plan.grid)

    def counted(strip_counts: Counts | None) -> None:
        if strip_counts is not None:
            counts.add(strip_counts)
            if progress is not None:
                progress(counts.windows, total)

    spec_out = output_spec(job.info, job.meta, cfg)
    directory = run.directory if run else None
    with open_writer(
        job.output_path, spec_out, overwrite=overwrite, partial_dir=directory, resume=start_row > 0
    ) as writer:
        args = (job, cfg, dclient, spec, finish, in_flight, counted)
        if isinstance(writer, ZarrWriter):
            _write_zarr(*args, writer)
        else:
            _write_gtiff(*args, writer, start_row, run.record if run else None)


def _resources(cfg: PredictConfig, device: str) -> dict[str, float] | None:
    """Dask resources of the model's tasks: a GPU each on a cluster of GPU workers."""
    return {"GPU": 1} if (cfg.scheduler and device == "cuda") else None


def _write_gtiff(job, cfg, dclient, spec, finish, in_flight, counted, writer, start, record):
    """Receive the finished rows in order, assemble blocks and write them on a writer thread."""
    from geoseg.run.scheduling import strip_pieces

    plan = job.plan
    first_strip = plan.resume_point(start) if start else 0
    resources = _resources(cfg, job.device)
    pieces = strip_pieces(
        dclient, job.source, plan, spec, finish, in_flight, resources, first_strip
    )

    def rows():
        for piece, strip_counts in pieces:
            counted(strip_counts)
            yield piece

    blocks = assemble_blocks(plan, rows(), finish, job.meta.classes, start)
    write_blocks(blocks, writer, job.info.width, record)


def _write_zarr(job, cfg, dclient, spec, finish, in_flight, counted, writer) -> None:
    """Have the workers write the store's block rows; only window counts come back."""
    from geoseg.run.scheduling import piece_futures, write_by_workers

    pieces = piece_futures(dclient, job.source, job.plan, spec, finish, _resources(cfg, job.device))
    store, output = str(writer.store), str(job.output_path)
    k = job.meta.classes
    for strip_counts in write_by_workers(
        dclient, pieces, job.plan, finish, k, store, output, in_flight, writer.spec.block_size
    ):
        counted(strip_counts)
