"""Strips, the unit of work of a prediction, blended where the model runs: pure maths, no I/O.

A *strip* is a run of consecutive grid rows. Whoever evaluates a strip (a Dask worker, or this
process) sums its windows' weighted probabilities in window order (:class:`Stitcher`) and at
once finishes the rows that only its own windows touch, its *interior*: class ids, and uint8
probabilities or confidence when asked (:class:`Finish`). The rows it shares with the next
strip, its bottom *seam* (as many rows as the overlap), leave as partial sums; the next strip's
top seam covers the same rows, and :func:`join_seam` adds the two. Strips are at least as high
as the overlap, so no row is touched by more than two strips.

Summation order, which makes the class map reproducible bit for bit: a pixel's sum is, strip by
strip in strip order, the window-order sum of each strip's windows. Strips are fixed by the
plan (the grid and the batch size: :func:`strip_height`), never by the block size, the workers,
the threads or the scheduler. :func:`reference_accumulate` is the naive full-array reference
with that order. (Two partial sums meet at a seam pixel, and ``a + b == b + a`` exactly, so the
order of the two strips is immaterial; what matters is that each strip sums its own windows
first.)

The sums are numpy arrays, or torch tensors on the model's GPU (:mod:`geoseg.core.backend`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from geoseg.core.backend import HOST, Backend, device_classes, to_host
from geoseg.core.blend import window_weights
from geoseg.core.confidence import PROB_NODATA, confidence_map, quantize
from geoseg.core.stitch import CELL_COLS, Band, Stitcher, normalize_sums, to_classes
from tilers.grid import Grid

# A strip holds at least this many window pixels (64 windows of 256^2) and this many batches:
# the scheduler's work per strip (its three tasks and one result message), and each seam's
# extra work, are paid once per strip. Rasters up to about 12k px wide get strips of several
# grid rows; wider ones have more than this in one grid row. A small raster still gets up to
# MIN_STRIPS strips, for its workers to share and for --resume to keep.
STRIP_PIXELS = 2**22
STRIP_BATCHES = 8
MIN_STRIPS = 16


@dataclass(frozen=True)
class Strip:
    """Consecutive grid rows evaluated, blended and finished by one task.

    Attributes
    ----------
    index : int
        Position among the plan's strips.
    grid_rows : tuple of int
        Grid rows ``[g0, g1)``.
    rows : tuple of int
        Raster rows ``[top, bottom)`` its windows touch.
    interior : tuple of int
        Raster rows touched by its windows only; those above are the previous strip's seam,
        those below the next one's.
    batches : tuple of int
        The plan's batches ``[b0, b1)`` that hold its windows.
    """

    index: int
    grid_rows: tuple[int, int]
    rows: tuple[int, int]
    interior: tuple[int, int]
    batches: tuple[int, int] = (0, 0)


def strip_height(grid: Grid, batch_size: int) -> int:
    """Grid rows per strip: :data:`STRIP_PIXELS` and :data:`STRIP_BATCHES` of window pixels.

    At most ``1 / MIN_STRIPS`` of the grid rows (and at least one), so that a small raster is
    cut into several strips too.
    """
    th, tw = grid.tile
    want = max(STRIP_PIXELS, STRIP_BATCHES * batch_size * th * tw)
    rows = -(-want // (grid.shape[1] * th * tw))
    return max(1, min(rows, grid.shape[0] // MIN_STRIPS))


def make_strips(grid: Grid, height: int) -> list[Strip]:
    """Cut the grid rows into strips of ``height`` rows, taller where the overlap needs it.

    A strip ends only where the next one starts below the previous strip's windows, so every
    raster row is touched by at most two strips. ``batches`` is left empty (see
    :func:`geoseg.core.plan.make_plan`).
    """
    starts, n, th = grid.row_starts, grid.shape[0], grid.tile[0]
    spans: list[tuple[int, int]] = []
    g0, above = 0, 0  # `above`: the bottom of the previous strip's windows
    while g0 < n:
        g1 = min(n, g0 + height)
        while g1 < n and starts[g1] < above:
            g1 += 1
        spans.append((g0, g1))
        above = min(starts[g1 - 1] + th, grid.height)
        g0 = g1
    tops = [starts[a] for a, _ in spans]
    bottoms = [min(starts[b - 1] + th, grid.height) for _, b in spans]
    return [
        Strip(
            j,
            span,
            (tops[j], bottoms[j]),
            (bottoms[j - 1] if j else 0, tops[j + 1] if j + 1 < len(spans) else grid.height),
        )
        for j, span in enumerate(spans)
    ]


@dataclass
class Rows:
    """Finished raster rows ``[row0, row0 + h)``, full width: what travels to the writer.

    ``probs`` (classes, h, w) and ``confidence`` (h, w) are uint8-encoded
    (:func:`geoseg.core.confidence.quantize`), present only when asked for.
    """

    row0: int
    classes: np.ndarray
    probs: np.ndarray | None = None
    confidence: np.ndarray | None = None

    @property
    def row1(self) -> int:
        """First row below these."""
        return self.row0 + self.classes.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays."""
        return sum(a.nbytes for a in (self.classes, self.probs, self.confidence) if a is not None)


@dataclass(frozen=True)
class Finish:
    """How blended rows become output: the class dtype and nodata, and the extra layers.

    Attributes
    ----------
    nodata : int
        Class id of pixels no window weighted.
    dtype : str
        ``uint8`` or ``uint16``.
    probabilities : bool
        Also encode the blended probabilities.
    confidence : str, optional
        A :data:`geoseg.core.confidence.MEASURES` name to encode.
    """

    nodata: int
    dtype: str
    probabilities: bool = False
    confidence: str | None = None

    def rows(self, row0: int, sums: np.ndarray, weights: np.ndarray) -> Rows:
        """Finish rows from their summed weighted probabilities (``sums`` is overwritten).

        Device sums (torch) are normalized and reduced on their device; only the class ids,
        and the probabilities when a layer needs them, are copied to the host.
        """
        if isinstance(sums, np.ndarray):
            probs = normalize_sums(sums, weights, inplace=True)
            classes = to_classes(probs, weights, self.nodata, self.dtype)
        else:
            probs, classes = device_classes(sums, weights, self.nodata, self.dtype)
            if self.probabilities or self.confidence is not None:
                probs = to_host(probs)
        encoded = quantize(probs, classes, self.nodata) if self.probabilities else None
        conf = None
        if self.confidence is not None:
            conf = quantize(confidence_map(probs, self.confidence), classes, self.nodata)
        return Rows(row0, classes, encoded, conf)

    def empty(self, row0: int, rows: int, width: int, classes: int) -> Rows:
        """Rows to fill: nodata class ids, and the extra layers asked for."""
        probs = (
            np.full((classes, rows, width), PROB_NODATA, np.uint8) if self.probabilities else None
        )
        conf = np.full((rows, width), PROB_NODATA, np.uint8) if self.confidence else None
        return Rows(row0, np.full((rows, width), self.nodata, self.dtype), probs, conf)


def put_rows(target: Rows, piece: Rows, col0: int = 0) -> None:
    """Copy the rows ``piece`` and ``target`` share into ``target``, from column ``col0``."""
    r0, r1 = max(target.row0, piece.row0), min(target.row1, piece.row1)
    if r0 >= r1:
        return
    dst = slice(r0 - target.row0, r1 - target.row0)
    src = slice(r0 - piece.row0, r1 - piece.row0)
    cols = slice(col0, col0 + piece.classes.shape[1])
    target.classes[dst, cols] = piece.classes[src]
    if target.probs is not None:
        target.probs[:, dst, cols] = piece.probs[:, src]
    if target.confidence is not None:
        target.confidence[dst, cols] = piece.confidence[src]


@dataclass
class Counts:
    """Windows of a strip: in the grid, evaluated, skipped (all nodata)."""

    windows: int = 0
    run: int = 0
    skipped: int = 0

    def add(self, other: Counts) -> None:
        """Count ``other``'s windows too."""
        self.windows += other.windows
        self.run += other.run
        self.skipped += other.skipped


@dataclass
class StripResult:
    """A blended strip: its finished interior and its two seams' partial sums.

    ``top`` and ``bottom`` are :class:`~geoseg.core.stitch.Band` s of unnormalized sums (None
    where the strip shares no rows with a neighbour: the first and last strip, a zero overlap).
    """

    strip: Strip
    interior: Rows
    top: Band | None
    bottom: Band | None
    counts: Counts = field(default_factory=Counts)

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays."""
        seams = sum(b.sums.nbytes + b.weights.nbytes for b in (self.top, self.bottom) if b)
        return self.interior.nbytes + seams


def blend_strip(
    grid: Grid,
    strip: Strip,
    results: Iterable,
    num_classes: int,
    blend: str,
    finish: Finish,
    backend: Backend = HOST,
) -> StripResult:
    """Sum a strip's evaluated windows in window order and finish its interior rows.

    Parameters
    ----------
    grid : Grid
        The window grid.
    strip : Strip
        The strip.
    results : iterable of BatchResult
        The strip's batches (:func:`geoseg.core.plan.evaluate_batch`), in order.
    num_classes : int
        Probability channels.
    blend : str
        Blend mode (:func:`geoseg.core.blend.window_weights`).
    finish : Finish
        How the interior rows are finished.
    backend : Backend
        Where the sums live; the results' probabilities are that backend's arrays. The seams
        are handed over on the host (they travel to another task).

    Notes
    -----
    Cells of sums are finished as soon as they are final (:class:`Stitcher`), so besides its
    seams a strip holds a few cells of ``tile`` rows, however wide or tall it is.
    """
    own0, own1 = strip.interior
    interior = finish.empty(own0, own1 - own0, grid.width, num_classes)
    whole = [span for span in ((strip.rows[0], own0), (own1, strip.rows[1])) if span[0] < span[1]]
    stitcher = Stitcher(grid, num_classes, strip.grid_rows, whole, backend)
    seams: dict[str, list[Band]] = {"top": [], "bottom": []}
    counts = Counts()
    for cell in _final_cells(grid, stitcher, results, blend, counts):
        if cell.row1 <= own0:
            seams["top"].append(cell)
        elif cell.row0 >= own1:
            seams["bottom"].append(cell)
        else:
            put_rows(interior, finish.rows(cell.row0, cell.sums, cell.weights), cell.col0)
    top, bottom = (_joined(seams[side], backend) for side in ("top", "bottom"))
    return StripResult(strip, interior, top, bottom, counts)


def _final_cells(
    grid: Grid, stitcher: Stitcher, results: Iterable, blend: str, counts: Counts
) -> Iterator[Band]:
    """Add the strip's evaluated windows in order; yield each cell of sums once it is final."""
    asarray = stitcher.backend.asarray
    for res in results:
        k = 0
        for i, valid, ran in zip(res.indices, res.valid, res.run, strict=True):
            counts.windows += 1
            if ran:
                counts.run += 1
                weights = window_weights(grid, i, blend)
                if not valid.all():  # nodata pixels weigh nothing
                    weights = weights * valid
                stitcher.add(i, res.probs[k], asarray(weights))
                k += 1
            else:
                counts.skipped += 1
            yield from stitcher.final(i)
    yield from stitcher.rest()


def _joined(bands: Sequence[Band], backend: Backend) -> Band | None:
    """One host band of full-width row segments, or None when there are none."""
    if not bands:
        return None
    bands = sorted(bands, key=lambda b: b.row0)
    if len(bands) == 1:  # no copy: a wide raster's seam is tens of MB
        sums, weights = bands[0].sums, bands[0].weights
    else:
        sums = backend.concat([b.sums for b in bands], axis=1)
        weights = backend.concat([b.weights for b in bands], axis=0)
    return Band(bands[0].row0, bands[-1].row1, to_host(sums), to_host(weights))


def join_seam(above: Band, below: Band, finish: Finish) -> Rows:
    """Finish the rows two consecutive strips share from their partial sums.

    ``above`` is the upper strip's ``bottom``, ``below`` the lower strip's ``top``. They are
    added and finished :data:`~geoseg.core.stitch.CELL_COLS` columns at a time, so that no
    third seam-sized array is made.
    """
    if (above.row0, above.row1) != (below.row0, below.row1):
        raise ValueError(
            f"seam rows differ: {above.row0}-{above.row1} above, {below.row0}-{below.row1} below"
        )
    classes, rows, width = above.sums.shape
    out = finish.empty(above.row0, rows, width, classes)
    for c in range(0, width, CELL_COLS):
        cols = slice(c, c + CELL_COLS)
        sums = above.sums[:, :, cols] + below.sums[:, :, cols]
        put_rows(
            out, finish.rows(above.row0, sums, above.weights[:, cols] + below.weights[:, cols]), c
        )
    return out


def has_seam_above(strip: Strip) -> bool:
    """Whether ``strip`` shares rows with the strip above (the overlap is not zero)."""
    return strip.interior[0] > strip.rows[0]


def ordered_rows(results: Iterable[StripResult], finish: Finish) -> Iterator[Rows]:
    """Finished rows top to bottom from strips in order: each seam, then the next interior."""
    previous = None
    for res in results:
        if previous is not None and has_seam_above(res.strip):
            yield join_seam(previous.bottom, res.top, finish)
        yield res.interior
        previous = res


def reference_accumulate(
    grid: Grid,
    contributions: Iterable[tuple[int, np.ndarray, np.ndarray]],
    num_classes: int,
    strips: Sequence[Strip] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Naive reference of the summation order: each strip into a full-size array, then summed.

    Without ``strips`` all windows form one strip. For tests and small rasters only: it holds
    the whole raster's sums (twice) in memory.
    """
    total = np.zeros((num_classes, grid.height, grid.width), np.float32)
    weights = np.zeros((grid.height, grid.width), np.float32)
    strip_of = {g: j for j, s in enumerate(strips) for g in range(*s.grid_rows)}
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for index, probs, w in contributions:
        j = strip_of.get(grid.row_of(index), 0)
        if j not in parts:
            parts[j] = (np.zeros_like(total), np.zeros_like(weights))
        sums, wsum = parts[j]
        clip = grid.clipped(grid.window(index))
        rows, cols = clip.slices()
        sums[:, rows, cols] += (
            probs[:, : clip.height, : clip.width] * w[: clip.height, : clip.width]
        )
        wsum[rows, cols] += w[: clip.height, : clip.width]
    for j in sorted(parts):
        total += parts[j][0]
        weights += parts[j][1]
    return total, weights
