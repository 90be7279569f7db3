"""Stitch window probabilities into final rows, in bounded memory: pure numpy, no I/O.

Windows are added in their row-major grid order. Their weighted probabilities are summed into
*bands*, the raster rows between consecutive grid-row starts. Once every window of grid row ``g``
has been added, no later window touches band ``g``: it is final, and :meth:`Stitcher.pop_band`
hands it over and frees it. At most ``tile + stride`` raster rows are held at any time, whatever
the raster's height.

Every pixel receives its contributions in window order, whatever the output block size or the
number of workers, so the class map is reproducible bit for bit and equals the naive full-array
accumulation :func:`reference_accumulate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tilers.grid import Grid


@dataclass
class Band:
    """A horizontal strip of accumulated sums.

    Attributes
    ----------
    row0, row1 : int
        Raster rows ``[row0, row1)``.
    sums : ndarray
        (classes, rows, width) float32, the weighted probabilities summed in window order.
    weights : ndarray
        (rows, width) float32, the summed weights.
    """

    row0: int
    row1: int
    sums: np.ndarray
    weights: np.ndarray


class Stitcher:
    """Accumulate window contributions band by band.

    Parameters
    ----------
    grid : Grid
        The window grid.
    num_classes : int
        Number of probability channels per window.
    first_band : int
        Band to start from (to resume): windows of earlier grid rows are not accepted.
    """

    def __init__(self, grid: Grid, num_classes: int, first_band: int = 0) -> None:
        self.grid = grid
        self.num_classes = num_classes
        self._bands: dict[int, Band] = {}
        self._last_index = -1
        self._next_pop = first_band

    @property
    def open_rows(self) -> int:
        """Number of raster rows currently held in memory."""
        return sum(b.row1 - b.row0 for b in self._bands.values())

    def _band(self, g: int) -> Band:
        band = self._bands.get(g)
        if band is None:
            r0, r1 = self.grid.band(g)
            w = self.grid.width
            band = Band(
                r0,
                r1,
                np.zeros((self.num_classes, r1 - r0, w), np.float32),
                np.zeros((r1 - r0, w), np.float32),
            )
            self._bands[g] = band
        return band

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
        win = self.grid.clipped(self.grid.window(index))
        wrow, wcol = self.grid.window(index).row, self.grid.window(index).col
        c0, c1 = win.col - wcol, win.col_stop - wcol
        starts = self.grid.row_starts
        g = self.grid.row_of(index)
        while g < len(starts) and starts[g] < win.row_stop:
            band = self._band(g)
            g += 1
            r0, r1 = band.row0, min(band.row1, win.row_stop)
            if r1 <= r0:
                continue
            w = weights[r0 - wrow : r1 - wrow, c0:c1]
            p = probs[:, r0 - wrow : r1 - wrow, c0:c1]
            band.sums[:, r0 - band.row0 : r1 - band.row0, win.col : win.col_stop] += p * w
            band.weights[r0 - band.row0 : r1 - band.row0, win.col : win.col_stop] += w

    def pop_band(self, g: int) -> Band:
        """Return final band ``g`` and release it; bands must be popped in order."""
        if g != self._next_pop:
            raise ValueError(
                f"bands must be popped in order: asked for {g}, next is {self._next_pop}"
            )
        self._next_pop += 1
        band = self._bands.pop(g, None)
        return band if band is not None else self._band_empty(g)

    def _band_empty(self, g: int) -> Band:
        band = self._band(g)
        del self._bands[g]
        return band


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
    probs: np.ndarray, weights: np.ndarray, nodata: int, dtype: str, chunk_rows: int = 64
) -> np.ndarray:
    """Reduce probabilities (classes, H, W) to class ids; ``nodata`` where nothing was weighted.

    ``argmax`` runs over chunks of rows so its int64 temporary stays small.
    """
    classes = np.empty(probs.shape[1:], dtype)
    for r in range(0, probs.shape[1], chunk_rows):
        classes[r : r + chunk_rows] = np.argmax(probs[:, r : r + chunk_rows], axis=0)
    classes[weights <= 0] = nodata
    return classes


def reference_accumulate(
    grid: Grid, contributions: Iterable[tuple[int, np.ndarray, np.ndarray]], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Naive reference: accumulate every window into one full-size array, in window order.

    For tests and small rasters only: it holds the whole raster's sums in memory.
    """
    sums = np.zeros((num_classes, grid.height, grid.width), np.float32)
    weights = np.zeros((grid.height, grid.width), np.float32)
    for index, probs, w in contributions:
        win = grid.window(index)
        clip = grid.clipped(win)
        rows, cols = clip.slices()
        sums[:, rows, cols] += (
            probs[:, : clip.height, : clip.width] * w[: clip.height, : clip.width]
        )
        weights[rows, cols] += w[: clip.height, : clip.width]
    return sums, weights
