"""Tiled prediction: plan the windows, evaluate them in fixed batches, stitch, emit blocks.

Data flows one way::

    plan (tilers.grid)  ->  batches evaluated (engine, via a scheduler)  ->  Stitcher (bands)
        ->  BlockAssembler (output blocks)  ->  a sink (a writer, or an in-memory array)

This module never opens files and never builds a scheduler: :mod:`geoseg.run.pipeline` wires
readers, writers and Dask to it. Batches have a fixed membership (consecutive window numbers),
so every window is evaluated exactly once and with the same batch neighbours whatever the block
size or the number of workers, and the result is reproducible bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from geoseg.core.blend import check_mode, window_weights
from geoseg.core.confidence import confidence_map, quantize
from geoseg.core.stitch import Band, Stitcher, normalize_sums, to_classes
from geoseg.errors import ConfigError
from tilers.grid import Grid, Window, blocks


@dataclass(frozen=True)
class Plan:
    """The work for one raster.

    Attributes
    ----------
    grid : Grid
        The window grid.
    batches : tuple of tuple of int
        Window numbers of each batch, consecutive and in order.
    blend : str
        Blend mode.
    block_size : int
        Side of the output blocks.
    batch_size : int
        Windows per model call (the last batch may hold fewer).
    """

    grid: Grid
    batches: tuple[tuple[int, ...], ...]
    blend: str
    block_size: int
    batch_size: int = 1

    @property
    def blocks(self) -> list[Window]:
        """Output blocks, row-major."""
        return blocks(self.grid.height, self.grid.width, self.block_size)

    def resume_point(self, row: int) -> tuple[int, int]:
        """Where to restart so that raster rows ``row..`` come out exactly as in a full run.

        Returns
        -------
        first_batch : int
            Index of the first batch to evaluate (batch membership is unchanged).
        first_band : int
            First grid row whose windows touch rows ``>= row``; earlier windows only touch
            earlier rows and are left out.
        """
        touching = self.grid.rows_touching(row, self.grid.height)
        first_band = touching.start if len(touching) else self.grid.shape[0]
        first_window = first_band * self.grid.shape[1]
        first_batch = next(
            (b for b, idx in enumerate(self.batches) if idx[-1] >= first_window),
            len(self.batches),
        )
        return first_batch, first_band


def make_plan(
    height: int,
    width: int,
    *,
    tile: int | tuple[int, int],
    overlap: int | tuple[int, int],
    batch_size: int,
    blend: str = "gaussian",
    block_size: int = 2048,
) -> Plan:
    """Build the window grid and its fixed batches (see :class:`Plan`)."""
    grid = Grid.create(height, width, tile, overlap)
    if batch_size <= 0:
        raise ConfigError(f"batch_size {batch_size} must be positive; try 4", option="batch_size")
    if block_size <= 0:
        raise ConfigError(
            f"block_size {block_size} must be positive; try 2048", option="block_size"
        )
    n = len(grid)
    batches = tuple(tuple(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size))
    return Plan(grid, batches, check_mode(blend), block_size, batch_size)


@dataclass
class BatchResult:
    """What evaluating one batch returns.

    Attributes
    ----------
    indices : tuple of int
        Window numbers of the batch.
    valid : list of ndarray
        Per window, the (tile_h, tile_w) bool mask of pixels with data.
    probs : ndarray or None
        (n_run, classes, tile_h, tile_w) float32 for the windows that had data, in order.
    run : tuple of bool
        Per window, whether it was evaluated (False: all nodata, skipped).
    """

    indices: tuple[int, ...]
    valid: list[np.ndarray]
    probs: np.ndarray | None
    run: tuple[bool, ...]


def evaluate_batch(
    reader: Callable[[Window], tuple[np.ndarray, np.ndarray]],
    predict_proba: Callable[[np.ndarray], np.ndarray],
    grid: Grid,
    indices: Sequence[int],
) -> BatchResult:
    """Read the windows of one batch and run the model on those with any valid pixel.

    Parameters
    ----------
    reader : callable
        ``reader(window) -> (data (bands, h, w) float32, valid (h, w) bool)``.
    predict_proba : callable
        ``predict_proba(batch (B, bands, h, w)) -> (B, classes, h, w)``.
    grid : Grid
        The window grid.
    indices : sequence of int
        Window numbers of the batch.
    """
    data, valid = [], []
    for i in indices:
        d, v = reader(grid.window(i))
        data.append(d)
        valid.append(v)
    run = tuple(bool(v.any()) for v in valid)
    kept = [d for d, r in zip(data, run, strict=True) if r]
    probs = predict_proba(np.stack(kept)) if kept else None
    return BatchResult(tuple(indices), valid, probs, run)


@dataclass
class StitchStats:
    """Counts gathered while stitching."""

    windows: int = 0
    run: int = 0
    skipped: int = 0
    max_open_rows: int = 0


def stitch(
    plan: Plan,
    results: Iterable[BatchResult],
    num_classes: int,
    stats: StitchStats | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    first_band: int = 0,
) -> Iterator[Band]:
    """Add batch results in order and yield each band as soon as it is final.

    With ``first_band`` > 0 (a resumed run), windows of earlier grid rows are ignored and
    bands from ``first_band`` on are yielded.

    Yields
    ------
    Band
        Final rows (a row segment of a band, top to bottom) with their blended (normalized)
        probabilities in ``sums`` and the summed weights in ``weights``.
    """
    grid = plan.grid
    stitcher = Stitcher(grid, num_classes, first_band)
    stats = stats if stats is not None else StitchStats()
    ncols = grid.shape[1]
    next_band = first_band
    for res in results:
        k = 0
        for i, v, ran in zip(res.indices, res.valid, res.run, strict=True):
            stats.windows += 1
            if ran:
                stats.run += 1
                k += 1
                if grid.row_of(i) >= first_band:
                    stitcher.add(i, res.probs[k - 1], window_weights(grid, i, plan.blend) * v)
            else:
                stats.skipped += 1
            stats.max_open_rows = max(stats.max_open_rows, stitcher.open_rows)
            # a grid row is complete: hand its band over before the next row's windows
            # allocate rows further down (keeps at most `tile` rows of sums)
            while next_band <= (i + 1) // ncols - 1:
                yield from _final_band(stitcher, next_band)
                next_band += 1
        if on_batch is not None:
            on_batch(res)
    while next_band < grid.shape[0]:
        yield from _final_band(stitcher, next_band)
        next_band += 1


def _final_band(stitcher: Stitcher, g: int) -> Iterator[Band]:
    for piece in stitcher.pop_band(g):
        piece.sums = normalize_sums(piece.sums, piece.weights, inplace=True)
        yield piece


@dataclass
class OutputBlock:
    """A finished output block: classes and (optionally) probabilities and confidence.

    ``confidence`` is already uint8-encoded (:func:`geoseg.core.confidence.quantize`).
    """

    window: Window
    classes: np.ndarray
    probs: np.ndarray | None = None
    confidence: np.ndarray | None = None


@dataclass
class BlockAssembler:
    """Collect final bands into block rows and emit each block once all its rows are in.

    Only one block row of class ids (and, when asked, of float32 probabilities and of the
    uint8-encoded ``confidence`` measure, see :mod:`geoseg.core.confidence`) is buffered: the
    confidence is computed from each band's blended probabilities as it arrives, so the class
    probabilities are kept only when ``probabilities`` asks for them.
    """

    height: int
    width: int
    block_size: int
    nodata: int
    dtype: str
    num_classes: int
    probabilities: bool = False
    start_row: int = 0
    confidence: str | None = None
    _row0: int = -1
    _filled: int = 0
    _classes: np.ndarray | None = field(default=None, repr=False)
    _probs: np.ndarray | None = field(default=None, repr=False)
    _conf: np.ndarray | None = field(default=None, repr=False)

    def _start_block_row(self) -> None:
        rows = min(self.block_size, self.height - self._row0)
        self._classes = np.full((rows, self.width), self.nodata, self.dtype)
        if self.probabilities:
            self._probs = np.zeros((self.num_classes, rows, self.width), np.float32)
        if self.confidence is not None:
            self._conf = np.zeros((rows, self.width), np.uint8)
        self._filled = 0

    def add(self, band: Band) -> Iterator[OutputBlock]:
        """Take a final band (normalized probabilities) and yield the blocks it completes."""
        if self._row0 < 0:
            if self.start_row % self.block_size:
                raise ValueError(f"start row {self.start_row} is not on a block boundary")
            self._row0 = self.start_row
        r = max(band.row0, self.start_row)
        while r < band.row1:
            if self._classes is None:
                self._start_block_row()
            rows = self._classes.shape[0]
            take = min(band.row1 - r, self._row0 + rows - r)
            src = slice(r - band.row0, r - band.row0 + take)
            dst = slice(r - self._row0, r - self._row0 + take)
            self._classes[dst] = to_classes(
                band.sums[:, src], band.weights[src], self.nodata, self.dtype
            )
            if self._probs is not None:
                self._probs[:, dst] = band.sums[:, src]
            if self._conf is not None:
                measure = confidence_map(band.sums[:, src], self.confidence)
                self._conf[dst] = quantize(measure, self._classes[dst], self.nodata)
            self._filled += take
            r += take
            if self._filled == rows:
                yield from self._emit()

    def _emit(self) -> Iterator[OutputBlock]:
        rows = self._classes.shape[0]
        for c in range(0, self.width, self.block_size):
            cols = slice(c, min(c + self.block_size, self.width))
            probs = None if self._probs is None else self._probs[:, :, cols]
            conf = None if self._conf is None else self._conf[:, cols]
            yield OutputBlock(
                Window(self._row0, c, rows, cols.stop - c), self._classes[:, cols], probs, conf
            )
        self._row0 += rows
        self._classes = self._probs = self._conf = None


def run_plan(
    plan: Plan,
    results: Iterable[BatchResult],
    num_classes: int,
    *,
    nodata: int,
    dtype: str,
    probabilities: bool = False,
    stats: StitchStats | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    start_row: int = 0,
    on_released: Callable[[int], None] | None = None,
    confidence: str | None = None,
) -> Iterator[OutputBlock]:
    """Stitch ordered batch results and yield finished output blocks (row-major).

    With ``start_row`` (a block boundary) only blocks from that row on are produced; the
    results must then start at ``plan.resume_point(start_row)[0]``. ``on_released(nbytes)`` is
    called when a band's buffers (``nbytes`` in all) have been consumed and freed. With
    ``confidence`` (a :data:`geoseg.core.confidence.MEASURES` name) each block carries that measure.
    """
    grid = plan.grid
    asm = BlockAssembler(
        grid.height,
        grid.width,
        plan.block_size,
        nodata,
        dtype,
        num_classes,
        probabilities,
        start_row,
        confidence,
    )
    first_band = plan.resume_point(start_row)[1] if start_row else 0
    band_ends = {grid.band(g)[1] for g in range(grid.shape[0])}
    released = 0
    for piece in stitch(plan, results, num_classes, stats, on_batch, first_band):
        yield from asm.add(piece)
        released += piece.sums.nbytes + piece.weights.nbytes
        last_of_band = piece.row1 in band_ends
        del piece
        if on_released is not None and last_of_band:
            on_released(released)
            released = 0


# Bytes per window pixel of a CPU model call's activations: a generous bound for smp encoders
# (float32 feature maps of every stage, kept for the decoder's skip connections).
CPU_ACTIVATION_BYTES = 1024


def batch_bytes(
    tile_h: int, tile_w: int, batch: int, bands: int, classes: int, width: int, device: str
) -> int:
    """Memory one batch needs at least, in bytes.

    Its windows and probabilities (float32), the model's activations when it runs on the CPU,
    and the rows of sums that stitching holds. Used to refuse a ``--tile`` or ``--batch-size``
    that cannot fit before anything is allocated (a 100000 px tile needs hundreds of GiB).
    """
    px = tile_h * tile_w * batch
    data = px * 4 * (bands + 2 * classes)
    model = px * CPU_ACTIVATION_BYTES if device == "cpu" else 0
    rows = (classes + 1) * tile_h * max(width, tile_w) * 4
    return data + model + rows


def class_dtype(num_classes: int, nodata: int | None = None) -> tuple[str, int]:
    """Class-map dtype and nodata value: uint8/255 up to 255 classes, else uint16/65535.

    A given ``nodata`` (``--nodata``) replaces the default; it is refused (ConfigError) when
    it is a class id or does not fit the dtype, before any work is done.
    """
    dtype, default = ("uint8", 255) if num_classes <= 255 else ("uint16", 65535)
    if nodata is None:
        return dtype, default
    return dtype, check_nodata(nodata, num_classes)


def check_nodata(nodata: int, num_classes: int, what: str = "nodata") -> int:
    """Refuse a class-map nodata value that is a class id or does not fit the map's dtype.

    The map is uint8 up to 255 classes (uint16 above), so ``nodata`` must lie in
    ``num_classes .. 255`` (``.. 65535``); returns it.
    """
    top = 255 if num_classes <= 255 else 65535
    if isinstance(nodata, bool) or not isinstance(nodata, int | np.integer):
        raise ConfigError(
            f"{what} {nodata!r} is not an integer; use one from {num_classes} to {top}",
            option="nodata",
        )
    if nodata < num_classes:
        raise ConfigError(
            f"{what} {nodata} is a class id of the model (classes 0 to {num_classes - 1}); use a "
            f"value from {num_classes} to {top}",
            option="nodata",
        )
    if nodata > top:
        raise ConfigError(
            f"{what} {nodata} does not fit the {'uint8' if top == 255 else 'uint16'} class map; "
            f"use a value from {num_classes} to {top}",
            option="nodata",
        )
    return int(nodata)
