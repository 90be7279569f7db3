"""Tiled prediction: plan the windows and strips, evaluate batches, assemble output blocks.

Data flows one way::

    plan (tilers.grid, strips)  ->  each strip's batches evaluated and blended where the model
        runs (:mod:`geoseg.core.strips`)  ->  finished rows in order  ->  BlockAssembler (output
        blocks)  ->  a sink (a writer, or an in-memory array)

This module never opens files and never builds a scheduler: :mod:`geoseg.run.pipeline` wires
readers, writers and Dask to it. Strips and batches have a fixed membership (consecutive window
numbers; a batch never spans two strips), so every window is evaluated exactly once and with the
same batch neighbours whatever the block size or the number of workers, and the result is
reproducible bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from geoseg.core.blend import check_mode
from geoseg.core.strips import Finish, Rows, Strip, make_strips, put_rows, strip_height
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
        Windows per model call (a strip's last batch may hold fewer).
    strips : tuple of Strip
        The units of work (:mod:`geoseg.core.strips`), top to bottom.
    """

    grid: Grid
    batches: tuple[tuple[int, ...], ...]
    blend: str
    block_size: int
    batch_size: int = 1
    strips: tuple[Strip, ...] = ()

    @property
    def blocks(self) -> list[Window]:
        """Output blocks, row-major."""
        return blocks(self.grid.height, self.grid.width, self.block_size)

    def strip_batches(self, strip: Strip) -> tuple[tuple[int, ...], ...]:
        """Window numbers of each of ``strip``'s batches."""
        return self.batches[slice(*strip.batches)]

    def resume_point(self, row: int) -> int:
        """The first strip to evaluate so that rows ``row..`` come out exactly as in a full run.

        It is the first strip whose windows reach ``row``; the rows it shares with the strip
        above lie before ``row`` (no row is touched by more than two strips), and every strip's
        result depends on its own windows only.
        """
        return next((s.index for s in self.strips if s.rows[1] > row), len(self.strips))


def make_plan(
    height: int,
    width: int,
    *,
    tile: int | tuple[int, int],
    overlap: int | tuple[int, int],
    batch_size: int,
    blend: str = "gaussian",
    block_size: int = 2048,
    strip_rows: int | None = None,
) -> Plan:
    """Build the window grid, its strips and their fixed batches (see :class:`Plan`).

    ``strip_rows`` (grid rows per strip) defaults to :func:`geoseg.core.strips.strip_height`.
    """
    grid = Grid.create(height, width, tile, overlap)
    if batch_size <= 0:
        raise ConfigError(f"batch_size {batch_size} must be positive; try 4", option="batch_size")
    if block_size <= 0:
        raise ConfigError(
            f"block_size {block_size} must be positive; try 2048", option="block_size"
        )
    ncols, batches, strips = grid.shape[1], [], []
    for strip in make_strips(grid, strip_rows or strip_height(grid, batch_size)):
        first, stop = strip.grid_rows[0] * ncols, strip.grid_rows[1] * ncols
        b0 = len(batches)
        batches += [
            tuple(range(i, min(i + batch_size, stop))) for i in range(first, stop, batch_size)
        ]
        strips.append(replace(strip, batches=(b0, len(batches))))
    return Plan(grid, tuple(batches), check_mode(blend), block_size, batch_size, tuple(strips))


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
    windows = [reader(grid.window(i)) for i in indices]
    return evaluate_read(predict_proba, indices, windows)


def evaluate_read(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    indices: Sequence[int],
    windows: Sequence[tuple[np.ndarray, np.ndarray]],
) -> BatchResult:
    """Run the model on the windows of a batch already read (``(data, valid)`` each).

    The second half of :func:`evaluate_batch`, for callers that read ahead on another thread.
    """
    data = [d for d, _ in windows]
    valid = [v for _, v in windows]
    run = tuple(bool(v.any()) for v in valid)
    kept = [d for d, r in zip(data, run, strict=True) if r]
    probs = predict_proba(np.stack(kept)) if kept else None
    return BatchResult(tuple(indices), valid, probs, run)


@dataclass
class OutputBlock:
    """A finished output block: classes and (optionally) probabilities and confidence.

    ``probs`` and ``confidence`` are uint8-encoded (:func:`geoseg.core.confidence.quantize`).
    """

    window: Window
    classes: np.ndarray
    probs: np.ndarray | None = None
    confidence: np.ndarray | None = None


class BlockAssembler:
    """Collect finished rows into block rows and emit each block once all its rows are in.

    Only one block row is buffered (class ids, and the uint8 layers asked for). Rows arrive top
    to bottom; those above ``start_row`` (a block boundary, where a resumed run restarts) are
    dropped.
    """

    def __init__(
        self, height: int, width: int, block_size: int, finish: Finish, num_classes: int,
        start_row: int = 0,
    ) -> None:  # fmt: skip
        if start_row % block_size:
            raise ValueError(f"start row {start_row} is not on a block boundary")
        self.height, self.width, self.block_size = height, width, block_size
        self.finish, self.num_classes = finish, num_classes
        self._next = start_row
        self._rows: Rows | None = None

    def add(self, piece: Rows) -> Iterator[OutputBlock]:
        """Take the next finished rows and yield the blocks they complete."""
        while True:
            if self._rows is None:
                if self._next >= self.height:
                    return
                rows = min(self.block_size, self.height - self._next)
                self._rows = self.finish.empty(self._next, rows, self.width, self.num_classes)
            put_rows(self._rows, piece)
            if piece.row1 < self._rows.row1:
                return
            yield from self._emit()

    def _emit(self) -> Iterator[OutputBlock]:
        done, self._rows = self._rows, None
        self._next = done.row1
        h = done.classes.shape[0]
        for c in range(0, self.width, self.block_size):
            cols = slice(c, min(c + self.block_size, self.width))
            # copies: a queued block must not keep the whole block row alive
            probs = None if done.probs is None else done.probs[:, :, cols].copy()
            conf = None if done.confidence is None else done.confidence[:, cols].copy()
            window = Window(done.row0, c, h, cols.stop - c)
            yield OutputBlock(window, done.classes[:, cols].copy(), probs, conf)


def assemble_blocks(
    plan: Plan, pieces: Iterable[Rows], finish: Finish, num_classes: int, start_row: int = 0
) -> Iterator[OutputBlock]:
    """Output blocks (row-major) from finished rows in order (see ``strips.ordered_rows``).

    With ``start_row`` (a block boundary) only blocks from that row on are produced; the rows
    must then come from the strips from :meth:`Plan.resume_point` on.
    """
    grid = plan.grid
    asm = BlockAssembler(grid.height, grid.width, plan.block_size, finish, num_classes, start_row)
    for piece in pieces:
        yield from asm.add(piece)


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
