"""Regular overlapping window grids: pure window maths, no file is ever opened.

A grid is aligned to the raster origin with a stride of ``tile - overlap``; the last row and
column of windows are shifted inward so they end exactly on the raster edge, so no window
hangs off the raster. Along an axis shorter than the tile there is a single window starting
at 0; it extends past the raster and the reader pads it (reflect) and the result is cropped
back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property


class TilingError(ValueError):
    """A tiling value is unusable (tile, overlap, block size, grid size); one line says why.

    tilers imports nothing from geoseg; geoseg reports this error as it reports its own
    (:data:`geoseg.errors.REPORTED`).
    """


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of raster pixels: top-left ``(row, col)`` and ``height`` x ``width``."""

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        """One past the last row."""
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        """One past the last column."""
        return self.col + self.width

    def intersection(self, other: Window) -> Window | None:
        """Return the overlap of two windows, or ``None`` if they do not overlap."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def slices(self, origin: tuple[int, int] = (0, 0)) -> tuple[slice, slice]:
        """Return ``(rows, cols)`` slices relative to ``origin``."""
        r, c = self.row - origin[0], self.col - origin[1]
        return slice(r, r + self.height), slice(c, c + self.width)


def as_pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """``(value, value)`` for an int, else the pair as ints; a one-line error for anything else."""
    if isinstance(value, int):
        return value, value
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TilingError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    return int(a), int(b)


# More windows than this is a mistake (a tiny tile on a huge raster, or a raster whose header
# declares absurd dimensions): the grid and its batches are planned in memory up front.
MAX_WINDOWS = 2**24


def axis_count(size: int, tile: int, stride: int) -> int:
    """Number of windows along one axis (the length of :func:`axis_starts`), in O(1)."""
    return 1 if size <= tile else -(-(size - tile) // stride) + 1


def axis_starts(size: int, tile: int, stride: int) -> tuple[int, ...]:
    """Window start offsets along one axis.

    Parameters
    ----------
    size : int
        Raster length along the axis (> 0).
    tile : int
        Window length.
    stride : int
        Distance between consecutive starts (``tile - overlap``, > 0).

    Returns
    -------
    tuple of int
        Increasing starts; the last window ends exactly at ``size`` when ``size >= tile``.
    """
    if size <= tile:
        return (0,)
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return tuple(starts)


@dataclass(frozen=True)
class Grid:
    """The window grid over a ``height`` x ``width`` raster.

    Windows are numbered row-major; that number fixes the order in which their contributions
    are summed, so the stitched result does not depend on how the work is partitioned.
    """

    height: int
    width: int
    tile: tuple[int, int]
    overlap: tuple[int, int]

    @classmethod
    def create(
        cls,
        height: int,
        width: int,
        tile: int | tuple[int, int],
        overlap: int | tuple[int, int],
    ) -> Grid:
        """Validate arguments and build a grid (see :func:`validate_tiling`)."""
        th, tw = as_pair(tile, "tile")
        oh, ow = as_pair(overlap, "overlap")
        validate_tiling((th, tw), (oh, ow))
        if height <= 0 or width <= 0:
            raise TilingError(f"raster is {height}x{width} pixels; it must not be empty")
        n = axis_count(height, th, th - oh) * axis_count(width, tw, tw - ow)
        if n > MAX_WINDOWS:
            raise TilingError(
                f"--tile {th}x{tw} with --overlap {oh}x{ow} cuts the {width}x{height} px raster "
                f"into {n:,} windows, more than {MAX_WINDOWS:,}; use a larger --tile or a "
                "smaller --overlap"
            )
        return cls(int(height), int(width), (th, tw), (oh, ow))

    @property
    def stride(self) -> tuple[int, int]:
        """``tile - overlap`` along rows and columns."""
        return self.tile[0] - self.overlap[0], self.tile[1] - self.overlap[1]

    @cached_property
    def row_starts(self) -> tuple[int, ...]:
        """Top row of each grid row."""
        return axis_starts(self.height, self.tile[0], self.stride[0])

    @cached_property
    def col_starts(self) -> tuple[int, ...]:
        """Left column of each grid column."""
        return axis_starts(self.width, self.tile[1], self.stride[1])

    @property
    def shape(self) -> tuple[int, int]:
        """Number of grid rows and columns."""
        return len(self.row_starts), len(self.col_starts)

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def window(self, index: int) -> Window:
        """Return window number ``index`` (row-major)."""
        r, c = divmod(index, self.shape[1])
        return Window(self.row_starts[r], self.col_starts[c], self.tile[0], self.tile[1])

    def __iter__(self) -> Iterator[Window]:
        for i in range(len(self)):
            yield self.window(i)

    def row_of(self, index: int) -> int:
        """Grid row of window ``index``."""
        return index // self.shape[1]

    def band(self, grid_row: int) -> tuple[int, int]:
        """Raster rows that are final once grid rows ``0..grid_row`` are summed.

        Band ``g`` spans ``[row_starts[g], row_starts[g + 1])`` (the last one runs to the
        raster's last row): no window of a later grid row touches it.
        """
        starts = self.row_starts
        stop = starts[grid_row + 1] if grid_row + 1 < len(starts) else self.height
        return starts[grid_row], stop

    def rows_touching(self, row0: int, row1: int) -> range:
        """Grid rows whose windows intersect raster rows ``[row0, row1)``."""
        starts = self.row_starts
        lo = next((g for g, s in enumerate(starts) if s + self.tile[0] > row0), len(starts))
        hi = next((g for g, s in enumerate(starts) if s >= row1), len(starts))
        return range(lo, hi)

    def clipped(self, window: Window) -> Window:
        """Return the part of ``window`` inside the raster."""
        clip = window.intersection(Window(0, 0, self.height, self.width))
        assert clip is not None
        return clip


def validate_tiling(tile: tuple[int, int], overlap: tuple[int, int]) -> None:
    """Raise :class:`TilingError` unless ``0 <= overlap < tile`` on both axes."""
    for t, o, axis in ((tile[0], overlap[0], "rows"), (tile[1], overlap[1], "columns")):
        if t <= 0:
            raise TilingError(f"--tile {t} ({axis}) must be positive; try --tile 512")
        if o < 0:
            raise TilingError(f"--overlap {o} ({axis}) must not be negative; try --overlap 128")
        if o >= t:
            raise TilingError(
                f"--overlap {o} must be smaller than --tile {t} ({axis}); try --overlap {t // 4}"
            )


def blocks(height: int, width: int, block_size: int) -> list[Window]:
    """Split a raster into output blocks of ``block_size`` (the last ones smaller), row-major."""
    if block_size <= 0:
        raise TilingError(f"--block-size {block_size} must be positive; try --block-size 2048")
    return [
        Window(r, c, min(block_size, height - r), min(block_size, width - c))
        for r in range(0, height, block_size)
        for c in range(0, width, block_size)
    ]
