"""Benchmark seams of `geoseg predict`: label changes across window edges against elsewhere.

Each image is segmented with geoseg's real predict path (:func:`geoseg.api.predict_file`, in
process, on the CPU) once per blend mode. The window grid is the one predict used, rebuilt
with :func:`geoseg.core.plan.make_plan` from the run's raster size and tile and the same
overlap. Cut lines along each axis:

- blends other than ``crop``: the edges of every window (between its first row/column and
  the one before, and between its last row/column and the one after), the raster border
  excluded;
- ``crop``: the cuts between the kept centres (:func:`geoseg.core.blend.nearest_centre_spans`).

The seam ratio is the rate of label changes between adjacent pixels (horizontal and vertical
pairs) that straddle a cut line, divided by the rate over all other adjacent pairs: 1.0 means
the window edges are invisible in the class map, 2.0 that labels change twice as often across
them as elsewhere. Pairs with a nodata pixel are left out. Prints one row per image and blend
and a mean row (the mean of the image rows) per blend. Usage::

    python benchmarks/bench_seams.py [--model models/dubai-demo] [--tile 256] [--overlap 64]
        [--blends gaussian,mean,crop] [--images "Tile 7/images/image_part_003.jpg",...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rasterio.errors import NotGeoreferencedWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import DUBAI, default_model, model_tile  # noqa: E402

from geoseg.core.blend import nearest_centre_spans  # noqa: E402
from geoseg.core.plan import make_plan  # noqa: E402
from geoseg.run.pipeline import default_overlap  # noqa: E402
from tilers.grid import Grid  # noqa: E402

DEFAULT_IMAGES = ",".join(f"Tile 7/images/image_part_00{i}.jpg" for i in (3, 5, 7))


def seam_ratio(
    classes: np.ndarray,
    row_cuts: Sequence[int],
    col_cuts: Sequence[int],
    nodata: int | None = None,
) -> tuple[float, float, float]:
    """Label-change rates across cut lines and elsewhere, and their ratio.

    Parameters
    ----------
    classes : ndarray
        (height, width) class map.
    row_cuts, col_cuts : sequence of int
        Cut lines: row cut ``r`` lies between rows ``r - 1`` and ``r`` (it splits vertical
        pairs), column cut ``c`` between columns ``c - 1`` and ``c``; ``0 < cut < size``.
    nodata : int, optional
        Pairs with a pixel of this value are left out.

    Returns
    -------
    boundary_rate, other_rate, ratio : float
        Share of pairs across a cut whose labels differ, the same share over all other pairs,
        and ``boundary_rate / other_rate``. The ratio is 1.0 when neither set of pairs has a
        change (a constant map: no seams), ``inf`` when only pairs across a cut do, and
        ``nan`` when there are no pairs across a cut or no others (a rate is ``nan`` then).
    """
    classes = np.asarray(classes)
    if classes.ndim != 2:
        raise ValueError(f"classes must be 2-D, got shape {classes.shape}")
    counts = np.zeros((2, 2), np.int64)  # [across a cut, other] x [pairs, changes]
    for axis, cuts in ((0, row_cuts), (1, col_cuts)):
        size = classes.shape[axis]
        a = classes[:-1] if axis == 0 else classes[:, :-1]
        b = classes[1:] if axis == 0 else classes[:, 1:]
        cuts = np.asarray(sorted(set(int(c) for c in cuts)), dtype=np.int64)
        if len(cuts) and (cuts[0] <= 0 or cuts[-1] >= size):
            raise ValueError(f"cuts along axis {axis} must lie in 1..{size - 1}, got {cuts}")
        on = np.zeros(size - 1, bool)
        on[cuts - 1] = True
        on = on[:, None] if axis == 0 else on[None, :]
        valid = np.ones(a.shape, bool) if nodata is None else (a != nodata) & (b != nodata)
        change = (a != b) & valid
        for k, mask in enumerate((on, ~on)):
            counts[k, 0] += int((valid & mask).sum())
            counts[k, 1] += int((change & mask).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        boundary, other = (counts[:, 1] / counts[:, 0]).tolist()
    if counts[0, 0] == 0 or counts[1, 0] == 0:
        return boundary, other, float("nan")
    if boundary == 0 and other == 0:
        return boundary, other, 1.0
    return boundary, other, (boundary / other if other else float("inf"))


def cut_lines(grid: Grid, blend: str) -> tuple[list[int], list[int]]:
    """Row and column cut lines of ``grid`` for ``blend`` (see the module docstring)."""
    out = []
    for starts, tile, size in (
        (grid.row_starts, grid.tile[0], grid.height),
        (grid.col_starts, grid.tile[1], grid.width),
    ):
        if blend == "crop":
            cuts = {lo for lo, _ in nearest_centre_spans(starts, tile, size)[1:]}
        else:
            cuts = {s for s in starts if s > 0} | {s + tile for s in starts if s + tile < size}
        out.append(sorted(cuts))
    return out[0], out[1]


def measure(image: Path, model: Path, blend: str, tile: int, overlap: int, out: Path) -> tuple:
    """Predict ``image`` with ``blend`` and return its :func:`seam_ratio` on predict's grid."""
    import rasterio

    from geoseg.api import predict_file

    summary = predict_file(
        image, out, model, tile=tile, overlap=overlap, blend=blend, device="cpu", overwrite=True
    )
    grid = make_plan(
        summary.height,
        summary.width,
        tile=summary.tile,
        overlap=default_overlap(overlap, tile),
        batch_size=summary.batch_size,
        blend=blend,
    ).grid
    with rasterio.open(out) as src:
        classes, nodata = src.read(1), src.nodata
    rows, cols = cut_lines(grid, blend)
    return seam_ratio(classes, rows, cols, None if nodata is None else int(nodata))


def main() -> None:
    args = _args()
    logging.getLogger("geoseg").setLevel(logging.ERROR)  # "no georeference" for every JPEG
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    model = args.model or default_model(Path(tempfile.gettempdir()))
    tile = args.tile or model_tile(model)
    overlap = default_overlap(args.overlap, tile)
    images = [DUBAI / name for name in args.images.split(",")]
    blends = args.blends.split(",")
    print(f"model: {model}\ntile {tile}, overlap {overlap}, device cpu\n")
    print("| image | blend | boundary change rate | other change rate | seam ratio |")
    print("|---|---|---|---|---|")
    rows = {b: [] for b in blends}
    with tempfile.TemporaryDirectory() as tmp:
        for image in images:
            name = str(image.relative_to(DUBAI))
            for blend in blends:
                r = measure(image, model, blend, tile, overlap, Path(tmp) / "classes.tif")
                rows[blend].append(r)
                print(f"| {name} | {blend} | {r[0]:.4f} | {r[1]:.4f} | {r[2]:.2f} |")
    for blend in blends:
        m = np.mean(rows[blend], axis=0)
        print(f"| **mean** | {blend} | {m[0]:.4f} | {m[1]:.4f} | **{m[2]:.2f}** |")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--tile", type=int, default=256, help="0: the model's tile size")
    ap.add_argument("--overlap", type=int, default=64, help="default 64")
    ap.add_argument("--blends", default="gaussian,mean,crop", help="comma list of blend modes")
    ap.add_argument(
        "--images", default=DEFAULT_IMAGES, help=f"comma list under {DUBAI}; default: Tile 7"
    )
    return ap.parse_args()


if __name__ == "__main__":
    main()
