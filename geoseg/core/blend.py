"""Per-window blending weights: pure numpy, no I/O.

Each window's softmax probabilities are multiplied by a weight map and summed; the sum is divided
by the summed weights. ``gaussian``, ``cosine`` and ``mean`` weights depend only on the tile
shape; ``crop`` keeps, for every pixel, only the window whose centre is nearest (ties go to the
earlier window), so its weights depend on the window's place in the grid.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, get_args

import numpy as np

from geoseg.errors import ConfigError
from tilers.grid import Grid

BlendMode = Literal["gaussian", "cosine", "mean", "crop"]
BLEND_MODES: tuple[str, ...] = get_args(BlendMode)

# Floor for the tapered windows so that raster-edge pixels covered by one window still count.
EPS = 1e-3


def check_mode(mode: str) -> BlendMode:
    """Return ``mode`` if it is a known blend mode, else raise :class:`ConfigError`."""
    if mode not in BLEND_MODES:
        raise ConfigError(
            f"blend {mode!r} is unknown; choose one of {', '.join(BLEND_MODES)}", option="blend"
        )
    return mode  # type: ignore[return-value]


def gaussian_1d(n: int, sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian profile of length ``n`` centred on the window, ``sigma = n * sigma_scale``."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    sigma = max(n * sigma_scale, 1e-6)
    return np.exp(-0.5 * (x / sigma) ** 2)


def cosine_1d(n: int) -> np.ndarray:
    """Hann (raised cosine) profile of length ``n``, peaking at the centre."""
    x = (np.arange(n, dtype=np.float64) + 0.5) / n
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * x)


@lru_cache(maxsize=16)
def _shape_weights(mode: str, height: int, width: int) -> np.ndarray:
    if mode == "mean":
        w = np.ones((height, width))
    else:
        profile = gaussian_1d if mode == "gaussian" else cosine_1d
        w = np.outer(profile(height), profile(width))
        w = np.maximum(w / w.max(), EPS)
    out = w.astype(np.float32)
    out.setflags(write=False)
    return out


def nearest_centre_spans(starts: tuple[int, ...], tile: int, size: int) -> list[tuple[int, int]]:
    """Span of raster positions owned by each window along one axis (``crop`` blending).

    A position belongs to the window whose centre is nearest; ties go to the earlier window.
    The spans partition ``[0, size)``.
    """
    centres = [s + (tile - 1) / 2.0 for s in starts]
    bounds = [0]
    for a, b in zip(centres[:-1], centres[1:], strict=True):
        bounds.append(int(np.floor((a + b) / 2.0)) + 1)
    bounds.append(size)
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


def window_weights(grid: Grid, index: int, mode: BlendMode) -> np.ndarray:
    """Weight map (tile_h, tile_w) float32 of window ``index`` of ``grid``.

    Returned arrays may be shared and are read-only.
    """
    th, tw = grid.tile
    if mode != "crop":
        return _shape_weights(mode, th, tw)
    r, c = divmod(index, grid.shape[1])
    return _crop_weights(grid, r, c)


def _crop_weights(grid: Grid, r: int, c: int) -> np.ndarray:
    (r0, r1) = nearest_centre_spans(grid.row_starts, grid.tile[0], grid.height)[r]
    (c0, c1) = nearest_centre_spans(grid.col_starts, grid.tile[1], grid.width)[c]
    w = np.zeros(grid.tile, dtype=np.float32)
    rs, cs = grid.row_starts[r], grid.col_starts[c]
    w[r0 - rs : r1 - rs, c0 - cs : c1 - cs] = 1.0
    return w
