"""Per-band histogram matching: map a new region's values onto the training distribution.

Mean/std matching is too coarse when a region differs in gamma or in its share of bright and
dark surfaces; matching the whole distribution band by band is what remote-sensing pipelines
do for radiometric normalization. A distribution is stored as :data:`LEVELS` quantiles per
band (a few hundred bytes in a checkpoint), and values are mapped piecewise-linearly between
matching quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# quantile levels 0, 1/64, ..., 1 of every stored distribution
LEVELS = np.linspace(0.0, 1.0, 65)
# pixels per band a distribution is estimated from, at most (a regular subsample beyond)
MAX_SAMPLES = 4_000_000


def band_quantiles(
    images: Sequence[np.ndarray], valid: Sequence[np.ndarray | None] | None = None
) -> list[list[float]]:
    """The :data:`LEVELS` quantiles of each band over the valid pixels of ``images``.

    Parameters
    ----------
    images : sequence of ndarray
        ``(bands, H, W)`` arrays of one band count, in the units the quantiles are for.
    valid : sequence of ndarray or None, optional
        ``(H, W)`` masks of pixels with data (None: all pixels).

    Raises
    ------
    ValueError
        When no image has a valid pixel, or a value is not finite.
    """
    bands = images[0].shape[0]
    keeps = [
        None if valid is None or valid[i] is None else valid[i].reshape(-1)
        for i in range(len(images))
    ]
    total = sum(
        img[0].size if k is None else int(k.sum()) for img, k in zip(images, keeps, strict=True)
    )
    stride = max(1, math.ceil(total / MAX_SAMPLES))  # every stride-th pixel: memory bounded
    parts = []
    for img, keep in zip(images, keeps, strict=True):
        x = np.asarray(img).reshape(bands, -1)
        x = x if keep is None else x[:, keep]
        parts.append(x[:, ::stride].astype(np.float32))
    values = np.concatenate(parts, axis=1)
    if values.shape[1] == 0:
        raise ValueError("no valid pixel to take a histogram of")
    if not np.isfinite(values).all():
        raise ValueError("the pixel values are not all finite")
    q = np.quantile(values, LEVELS, axis=1).T
    return [[float(v) for v in row] for row in q]


def check_quantiles(quantiles: object, bands: int, what: str) -> list[list[float]]:
    """``quantiles`` as one non-decreasing, finite list of ``len(LEVELS)`` values per band.

    Raises
    ------
    ValueError
        Naming ``what`` and what is wrong, for a one-line error.
    """
    rows = quantiles if isinstance(quantiles, list | tuple) else None
    if rows is None or len(rows) != bands:
        n = len(rows) if rows is not None else type(quantiles).__name__
        raise ValueError(f"{what} has {n} bands of quantiles; the model has {bands}")
    out = []
    for b, row in enumerate(rows):
        ok = isinstance(row, list | tuple) and len(row) == len(LEVELS)
        ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in row)
        if not ok or not all(math.isfinite(v) for v in row):
            raise ValueError(f"{what}: band {b + 1} is not {len(LEVELS)} finite quantile values")
        if any(a > c for a, c in zip(row, row[1:], strict=False)):
            raise ValueError(f"{what}: band {b + 1}'s quantiles decrease; they must not")
        out.append([float(v) for v in row])
    return out


def match_histograms(
    x: np.ndarray, source: Sequence[Sequence[float]], target: Sequence[Sequence[float]]
) -> np.ndarray:
    """Map each band of ``x`` (``(..., bands, H, W)``) from ``source`` onto ``target`` quantiles.

    Values between two source quantiles go linearly between the matching target quantiles;
    values beyond the extremes are shifted with the end quantiles (not clipped), so a brighter
    pixel than any seen stays brighter. Flat stretches of ``source`` map to their mean target.
    """
    out = np.empty_like(x, dtype=np.float32)
    for b, (src, dst) in enumerate(zip(source, target, strict=True)):
        src_u, dst_u = _strictly_increasing(np.asarray(src, np.float64), np.asarray(dst))
        band = x[..., b, :, :]
        mapped = np.interp(band, src_u, dst_u)
        below, above = band < src_u[0], band > src_u[-1]
        mapped[below] = band[below] - src_u[0] + dst_u[0]
        mapped[above] = band[above] - src_u[-1] + dst_u[-1]
        out[..., b, :, :] = mapped
    return out


def _strictly_increasing(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge repeated source quantiles (a flat histogram stretch), averaging their targets."""
    keys, inverse = np.unique(src, return_inverse=True)
    sums = np.bincount(inverse, weights=dst)
    counts = np.bincount(inverse)
    return keys, sums / counts
