"""Per-pixel confidence of a class map, and the uint8 encoding of probabilities: pure numpy.

Probabilities and confidence measures, all in [0, 1], are stored as uint8 ``round(v * 254)``
(0..254) with 255 reserved for nodata (where the class map is nodata), so a certain pixel
(``v = 1``) reads as 254, never as nodata. Files carry that encoding as GDAL scale
``1/254`` and offset 0 (``rasterio``'s ``ds.scales``), Zarr arrays as CF ``scale_factor``.

The measures a ``_confidence.tif`` can hold (:data:`MEASURES`), from the blended
probabilities ``p`` of a pixel sorted as ``p1 >= p2 >= ...`` over ``C`` classes:

- ``"probability"``: ``p1``, the winning class's probability (1 = certain);
- ``"margin"``: ``p1 - p2`` (0 = a tie between the two best classes; ``p1`` when ``C = 1``);
- ``"entropy"``: ``-sum(p log p) / log(C)`` (0 = certain, 1 = uniform; 0 when ``C = 1``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

PROB_SCALE = 254
PROB_NODATA = 255
MEASURES = ("probability", "margin", "entropy")
# What ``--uncertainty`` may ask for instead of the winning probability.
Uncertainty = Literal["entropy", "margin"]
QUANTIZATION = "round(p*254); 255 where the class map is nodata; p = value / 254"

__all__ = ["MEASURES", "PROB_NODATA", "PROB_SCALE", "QUANTIZATION", "confidence_map", "quantize"]


def quantize(values: np.ndarray, classes: np.ndarray, nodata: int) -> np.ndarray:
    """Encode values in [0, 1] as uint8 ``round(v * 254)``; 255 where ``classes`` is nodata.

    Parameters
    ----------
    values : ndarray
        ``(h, w)`` or ``(C, h, w)`` floats; NaN counts as 0, values outside [0, 1] are clipped.
    classes : ndarray
        ``(h, w)`` class map of the same pixels.
    nodata : int
        The class map's nodata value.

    Returns
    -------
    ndarray
        uint8 of the shape of ``values``.
    """
    clipped = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    out = np.rint(clipped * PROB_SCALE).astype(np.uint8)
    out[..., classes == nodata] = PROB_NODATA
    return out


def confidence_map(probs: np.ndarray, measure: str, chunk_rows: int = 32) -> np.ndarray:
    """The ``measure`` (see :data:`MEASURES`) of each pixel of ``probs`` ``(C, h, w)``, float32.

    Computed ``chunk_rows`` rows at a time, so its temporaries stay small however wide the
    band of probabilities is.
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown confidence measure {measure!r}; expected one of {MEASURES}")
    probs = np.nan_to_num(np.asarray(probs, np.float32), nan=0.0)
    out = np.empty(probs.shape[1:], np.float32)
    for r in range(0, probs.shape[1], chunk_rows):
        out[r : r + chunk_rows] = _measure(probs[:, r : r + chunk_rows], measure)
    return out


def _measure(p: np.ndarray, measure: str) -> np.ndarray:
    k = p.shape[0]
    if measure == "probability":
        return p.max(axis=0)
    if measure == "margin":
        if k == 1:
            return p[0]
        top = np.partition(p, k - 2, axis=0)
        return top[k - 1] - top[k - 2]
    if k == 1:
        return np.zeros(p.shape[1:], np.float32)
    q = np.clip(p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q), 0.0)
    return (-terms.sum(axis=0) / np.log(k)).astype(np.float32)
