"""Stitch window probabilities into final rows, in bounded memory: pure numpy, no I/O.

One :class:`Stitcher` sums one strip of the plan (:mod:`geoseg.core.strips`, which also holds
the naive full-array reference of the summation order). Windows are added in their row-major
grid order. Their weighted probabilities are summed into *cells*: the rows split at every
window's top and bottom (:func:`segment_bounds`), the columns every :data:`CELL_COLS`. A cell is
allocated when a window first reaches it (uninitialized: a window's first contribution to a
column is written, not added to zeros, which gives the same sums), and is *final* once the
strip's last window that touches it has been added; windows come in a known order, so that
window is known when the cell is made, and :meth:`Stitcher.final` hands the cell over and
forgets it then. Rows the caller keeps whole (a strip's seams, which leave as partial sums) are
one cell per row segment.

So a strip holds its seams, and besides them only the cells under the windows being added and
the overlap rows of its previous grid row: a few cells of ``tile`` rows, whatever the raster's
width or height, plus ``overlap`` rows at full width within a strip of several grid rows.

Every pixel receives its contributions in window order, whatever the output block size or the
number of workers.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.core.backend import HOST, Backend
from tilers.grid import Grid

# Columns of a cell (outside the rows kept whole): wide enough that the per-cell work (a few
# slice additions, one normalize and argmax) is small beside the pixels', small enough that the
# cells under a window's tile rows stay a few MB.
CELL_COLS = 1024


@dataclass
class Band:
    """A rectangle of accumulated sums: rows ``[row0, row1)``, columns from ``col0``.

    Attributes
    ----------
    row0, row1 : int
        Raster rows ``[row0, row1)``.
    sums : ndarray
        (classes, rows, columns) float32, the weighted probabilities summed in window order (a
        torch tensor on a GPU backend).
    weights : ndarray
        (rows, columns) float32, the summed weights.
    col0 : int
        Its first raster column.
    """

    row0: int
    row1: int
    sums: np.ndarray
    weights: np.ndarray
    col0: int = 0

    @property
    def col1(self) -> int:
        """First column right of it."""
        return self.col0 + self.weights.shape[-1]


def segment_bounds(grid: Grid) -> tuple[int, ...]:
    """Row boundaries at every window top and bottom: no window starts or ends inside a segment.

    Each window covers a run of whole segments, and so does each strip's interior and seams.
    """
    th = grid.tile[0]
    edges = {0, grid.height}
    for start in grid.row_starts:
        edges.add(start)
        edges.add(min(start + th, grid.height))
    return tuple(sorted(edges))


class Stitcher:
    """Accumulate one strip's window contributions in cells; hand each over once it is final.

    Parameters
    ----------
    grid : Grid
        The window grid.
    num_classes : int
        Number of probability channels per window.
    grid_rows : tuple of int, optional
        The strip's grid rows ``[g0, g1)``: only their windows are added (all by default).
    whole : sequence of tuple of int
        Row spans ``(row0, row1)`` on segment bounds, kept as one full-width cell per row
        segment (allocated at once, zero where no window reaches).
    backend : Backend
        Where the sums live (:mod:`geoseg.core.backend`): numpy on the host by default, torch
        on the model's GPU; ``add`` then takes that backend's arrays.
    cell_cols : int
        Columns of the other cells.
    """

    def __init__(
        self,
        grid: Grid,
        num_classes: int,
        grid_rows: tuple[int, int] | None = None,
        whole: Sequence[tuple[int, int]] = (),
        backend: Backend = HOST,
        cell_cols: int = CELL_COLS,
    ) -> None:
        self.grid, self.num_classes, self.backend = grid, num_classes, backend
        self.grid_rows = grid_rows or (0, grid.shape[0])
        self.cell_cols = cell_cols
        self._bounds = segment_bounds(grid)
        self._whole = {
            s for r0, r1 in whole for s in range(len(self._bounds) - 1)
            if r0 <= self._bounds[s] and self._bounds[s + 1] <= r1
        }  # fmt: skip
        self._cells: dict[tuple[int, int], Band] = {}
        self._filled: dict[tuple[int, int], int] = {}  # columns of each cell written so far
        self._due: list[tuple[int, int, int]] = []  # heap of (last window, segment, cell)
        self._last_index = -1
        for s in sorted(self._whole):
            self._cell(s, 0)

    @property
    def held_pixels(self) -> int:
        """Pixels of the cells currently held in memory."""
        return sum(c.weights.shape[0] * c.weights.shape[1] for c in self._cells.values())

    def add(self, index: int, probs: np.ndarray, weights: np.ndarray) -> None:
        """Add window ``index``'s contribution ``probs * weights``.

        Parameters
        ----------
        index : int
            Window number, in the strip's grid rows; must exceed every index added before.
        probs : ndarray
            (classes, tile_h, tile_w) float32 probabilities.
        weights : ndarray
            (tile_h, tile_w) float32 weights, zero on nodata pixels.
        """
        g0, g1 = self.grid_rows
        if not g0 <= self.grid.row_of(index) < g1:
            raise ValueError(f"window {index} is not in grid rows {g0} to {g1 - 1}")
        if index <= self._last_index:
            raise ValueError(f"windows must be added in order: {index} after {self._last_index}")
        self._last_index = index
        full = self.grid.window(index)
        win = self.grid.clipped(full)
        s = bisect.bisect_right(self._bounds, win.row) - 1
        while self._bounds[s] < win.row_stop:
            rows = slice(self._bounds[s] - full.row, self._bounds[s + 1] - full.row)
            for key, cell in self._cells_under(s, win.col, win.col_stop):
                a, b = max(win.col, cell.col0), min(win.col_stop, cell.col1)
                src = slice(a - full.col, b - full.col)
                self._put(key, cell, a - cell.col0, probs[:, rows, src], weights[rows, src])
            s += 1

    def _put(self, key: tuple[int, int], cell: Band, a: int, probs: Any, weights: Any) -> None:
        """Add ``probs * weights`` to the cell from its column ``a``.

        The cell's columns ``[0, self._filled[key])`` hold sums; those right of them were never
        reached, and are written instead of added to: the same values as adding to zeros
        (``0 + x == x``), while a write reads one array fewer and needs no temporary. Columns
        that a skipped window (all nodata) left behind are zeroed first. Windows reach a
        cell's columns left to right, so about half of all additions become writes.
        """
        b, filled = a + weights.shape[-1], self._filled[key]
        if filled < a:
            self._zero(cell, filled, a)
        split = min(max(filled, a), b)  # [a, split) is added to, [split, b) written
        if a < split:
            n = split - a
            cell.sums[:, :, a:split] += probs[:, :, :n] * weights[:, :n]
            cell.weights[:, a:split] += weights[:, :n]
        if split < b:
            n = split - a
            self.backend.multiply(probs[:, :, n:], weights[:, n:], cell.sums[:, :, split:b])
            cell.weights[:, split:b] = weights[:, n:]
        self._filled[key] = max(filled, b)

    @staticmethod
    def _zero(cell: Band, col0: int, col1: int) -> None:
        cell.sums[:, :, col0:col1] = 0
        cell.weights[:, col0:col1] = 0

    def final(self, index: int) -> Iterator[Band]:
        """Hand over and forget the cells that no window after ``index`` touches."""
        while self._due and self._due[0][0] <= index:
            _, s, c = heapq.heappop(self._due)
            cell = self._cells.pop((s, c))
            self._zero(cell, self._filled.pop((s, c)), cell.weights.shape[-1])  # not reached
            yield cell

    def rest(self) -> Iterator[Band]:
        """Hand over every cell still held: all windows were added."""
        yield from self.final(len(self.grid))

    def _cells_under(self, s: int, col0: int, col1: int) -> Iterator[tuple[tuple[int, int], Band]]:
        if s in self._whole:
            yield (s, 0), self._cells[(s, 0)]
            return
        n = self.cell_cols
        for c in range(col0 // n, (col1 - 1) // n + 1):
            cell = self._cells.get((s, c))
            yield (s, c), self._cell(s, c) if cell is None else cell

    def _cell(self, s: int, c: int) -> Band:
        """Allocate cell ``c`` of row segment ``s``, due after the last window touching it."""
        r0, r1 = self._bounds[s], self._bounds[s + 1]
        if s in self._whole:
            c0, c1 = 0, self.grid.width
        else:
            c0, c1 = c * self.cell_cols, min(self.grid.width, (c + 1) * self.cell_cols)
        h, w, empty = r1 - r0, c1 - c0, self.backend.empty
        cell = Band(r0, r1, empty((self.num_classes, h, w)), empty((h, w)), c0)
        self._cells[(s, c)] = cell
        self._filled[(s, c)] = 0
        heapq.heappush(self._due, (self._last_window(r1, c1), s, c))
        return cell

    def _last_window(self, row1: int, col1: int) -> int:
        """Index of the strip's last window (row-major) touching a cell that ends at these."""
        grid = self.grid
        g = min(self.grid_rows[1] - 1, bisect.bisect_left(grid.row_starts, row1) - 1)
        j = bisect.bisect_left(grid.col_starts, col1) - 1
        return g * grid.shape[1] + j


def normalize_sums(sums: np.ndarray, weights: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Blended probabilities ``sums / weights`` (float32); zero where the weight is zero.

    With ``inplace`` the division overwrites ``sums`` (no second band-sized array).
    """
    empty = weights <= 0
    # dividing by 1 where nothing weighed, then zeroing, is faster than a masked divide
    safe = np.where(empty, np.float32(1), weights)
    out = np.divide(sums, safe[None], out=sums if inplace else None)
    if empty.any():
        out[:, empty] = 0
    return out


def to_classes(
    probs: np.ndarray, weights: np.ndarray, nodata: int, dtype: str, chunk_rows: int = 32
) -> np.ndarray:
    """Reduce probabilities (classes, H, W) to class ids; ``nodata`` where nothing was weighted.

    The same ids as ``np.argmax(probs, axis=0)`` (ties go to the lower class), computed with
    whole-row comparisons: ``argmax`` along a short leading axis runs a tiny inner loop per
    pixel, which is many times slower. Classes are visited in
    increasing order, so "class ``k`` beats the best so far" can be recorded as
    ``ids = max(ids, k * beats)``. Rows are processed in chunks of ``chunk_rows`` so the
    temporaries stay small. A NaN probability never wins.
    """
    rows = probs.shape[1]
    classes = np.empty(probs.shape[1:], dtype)
    best = np.empty((min(chunk_rows, rows),) + probs.shape[2:], probs.dtype)
    beats = np.empty(best.shape, dtype)
    for r in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - r)
        chunk, top, won, ids = probs[:, r : r + n], best[:n], beats[:n], classes[r : r + n]
        np.copyto(top, chunk[0])
        ids.fill(0)
        for k in range(1, chunk.shape[0]):
            np.greater(chunk[k], top, out=won)  # 0 or 1 in the class dtype
            won *= k
            np.maximum(ids, won, out=ids)
            np.maximum(top, chunk[k], out=top)
    classes[weights <= 0] = nodata
    return classes
