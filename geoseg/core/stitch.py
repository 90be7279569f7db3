"""Stitch window probabilities into final rows, in bounded memory: pure numpy, no I/O.

Windows are added in their row-major grid order. Their weighted probabilities are summed into
row *segments* (split at every window's top and bottom row), allocated when a window first
reaches them. *Band* ``g`` is the rows between consecutive grid-row starts: once every window of
grid row ``g`` has been added, no later window touches it, and :meth:`Stitcher.pop_band` hands
its segments over and frees them. Popped as soon as its grid row is complete, at most ``tile``
raster rows are held at any time, whatever the raster's height.

Every pixel receives its contributions in window order, whatever the output block size or the
number of workers. One stitcher sums one strip of the plan (:mod:`geoseg.core.strips`, which also
holds the naive full-array reference of the summation order).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from geoseg.core.backend import HOST, Backend
from tilers.grid import Grid


@dataclass
class Band:
    """A horizontal strip of accumulated sums.

    Attributes
    ----------
    row0, row1 : int
        Raster rows ``[row0, row1)``.
    sums : ndarray
        (classes, rows, width) float32, the weighted probabilities summed in window order (a
        torch tensor on a GPU backend).
    weights : ndarray
        (rows, width) float32, the summed weights.
    """

    row0: int
    row1: int
    sums: np.ndarray
    weights: np.ndarray


def segment_bounds(grid: Grid) -> tuple[int, ...]:
    """Row boundaries at every window top and bottom: no window starts or ends inside a segment.

    Each band ``[row_starts[g], row_starts[g + 1])`` is a run of whole segments, and each window
    covers a run of whole segments, so a segment can be allocated when the first window reaches
    it and handed over with its band.
    """
    th = grid.tile[0]
    edges = {0, grid.height}
    for start in grid.row_starts:
        edges.add(start)
        edges.add(min(start + th, grid.height))
    return tuple(sorted(edges))


class Stitcher:
    """Accumulate window contributions segment by segment.

    Parameters
    ----------
    grid : Grid
        The window grid.
    num_classes : int
        Number of probability channels per window.
    first_band : int
        Band to start from (to resume): windows of earlier grid rows are not accepted.
    backend : Backend
        Where the sums live (:mod:`geoseg.core.backend`): numpy on the host by default, torch
        on the model's GPU; ``add`` then takes that backend's arrays.

    Notes
    -----
    Storage is allocated per row segment (:func:`segment_bounds`) when a window first reaches
    it, and a band's segments are released when the band is popped. Popping each band as soon
    as its grid row is complete keeps at most ``tile`` raster rows of sums: the rows under the
    current grid row's windows.
    """

    def __init__(
        self, grid: Grid, num_classes: int, first_band: int = 0, backend: Backend = HOST
    ) -> None:
        self.grid = grid
        self.backend = backend
        self.num_classes = num_classes
        self._bounds = segment_bounds(grid)
        self._segments: dict[int, Band] = {}
        self._last_index = -1
        self._next_pop = first_band

    @property
    def open_rows(self) -> int:
        """Number of raster rows currently held in memory."""
        return sum(b.row1 - b.row0 for b in self._segments.values())

    def _segment(self, s: int) -> Band:
        seg = self._segments.get(s)
        if seg is None:
            r0, r1 = self._bounds[s], self._bounds[s + 1]
            w = self.grid.width
            zeros = self.backend.zeros
            seg = Band(r0, r1, zeros((self.num_classes, r1 - r0, w)), zeros((r1 - r0, w)))
            self._segments[s] = seg
        return seg

    def add(self, index: int, probs: np.ndarray, weights: np.ndarray) -> None:
        """Add window ``index``'s contribution ``probs * weights``.

        Parameters
        ----------
        index : int
            Window number; must exceed every index added before.
        probs : ndarray
            (classes, tile_h, tile_w) float32 probabilities.
        weights : ndarray
            (tile_h, tile_w) float32 weights, zero on nodata pixels.
        """
        if index <= self._last_index:
            raise ValueError(f"windows must be added in order: {index} after {self._last_index}")
        if self.grid.row_of(index) < self._next_pop:
            raise ValueError(f"window {index} belongs to a band that was already popped")
        self._last_index = index
        full = self.grid.window(index)
        win = self.grid.clipped(full)
        c0, c1 = win.col - full.col, win.col_stop - full.col
        s = bisect.bisect_right(self._bounds, win.row) - 1
        while self._bounds[s] < win.row_stop:
            seg = self._segment(s)
            s += 1
            rows = slice(seg.row0 - full.row, seg.row1 - full.row)
            w = weights[rows, c0:c1]
            seg.sums[:, :, win.col : win.col_stop] += probs[:, rows, c0:c1] * w
            seg.weights[:, win.col : win.col_stop] += w

    def pop_band(self, g: int) -> list[Band]:
        """Return final band ``g`` as its row segments, top to bottom, and release them.

        Bands must be popped in order, once every window of grid rows ``<= g`` was added.
        """
        if g != self._next_pop:
            raise ValueError(
                f"bands must be popped in order: asked for {g}, next is {self._next_pop}"
            )
        self._next_pop += 1
        r0, r1 = self.grid.band(g)
        first = bisect.bisect_left(self._bounds, r0)
        last = bisect.bisect_left(self._bounds, r1)
        out = []
        for s in range(first, last):
            seg = self._segment(s)  # a segment no window reached comes out empty (nodata)
            del self._segments[s]
            out.append(seg)
        return out


def normalize_sums(sums: np.ndarray, weights: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Blended probabilities ``sums / weights`` (float32); zero where the weight is zero.

    With ``inplace`` the division overwrites ``sums`` (no second band-sized array).
    """
    out = sums if inplace else np.zeros_like(sums)
    empty = weights <= 0
    np.divide(sums, weights[None], out=out, where=~empty[None])
    if inplace and empty.any():
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
