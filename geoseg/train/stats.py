"""Statistics of training data: per-band normalization, class frequencies and weights."""

from __future__ import annotations

import numpy as np


def default_scale(dtype: np.dtype) -> float:
    """Raw-value divisor: 255 for 8-bit imagery, 1 otherwise (stats absorb the range)."""
    return 255.0 if np.dtype(dtype) == np.uint8 else 1.0


def band_stats(
    images: list[np.ndarray],
    scale: float = 255.0,
    nodata_valid: list[np.ndarray] | None = None,
) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of ``images / scale`` over valid pixels.

    Parameters
    ----------
    images : list of ndarray
        (bands, H, W) raw images.
    scale : float
        Divisor applied first, as in :func:`geoseg.model.engine.normalize`.
    nodata_valid : list of ndarray, optional
        (H, W) bool masks of pixels with data; others are excluded.

    Returns
    -------
    mean, std : list of float
        One value per band; std is at least 1e-6.
    """
    bands = images[0].shape[0]
    total = np.zeros(bands, np.float64)
    total_sq = np.zeros(bands, np.float64)
    count = 0
    for i, img in enumerate(images):
        x = img.reshape(bands, -1).astype(np.float64) / scale
        if nodata_valid is not None:
            x = x[:, nodata_valid[i].reshape(-1)]
        total += x.sum(axis=1)
        total_sq += (x * x).sum(axis=1)
        count += x.shape[1]
    mean = total / max(count, 1)
    var = np.maximum(total_sq / max(count, 1) - mean * mean, 0.0)
    return mean.tolist(), np.maximum(np.sqrt(var), 1e-6).tolist()


def band_range(
    images: list[np.ndarray], nodata_valid: list[np.ndarray] | None = None
) -> list[list[float]]:
    """Per-band ``[min, max]`` of the raw values of valid pixels, recorded in the checkpoint.

    Predict compares an input's values with it to warn about another range (16-bit values
    through a model trained on 8-bit ones). A band without valid pixels gets ``[0, 0]``.
    """
    bands = images[0].shape[0]
    lo = np.full(bands, np.inf)
    hi = np.full(bands, -np.inf)
    for i, img in enumerate(images):
        x = img.reshape(bands, -1)
        if nodata_valid is not None:
            x = x[:, nodata_valid[i].reshape(-1)]
        if x.shape[1]:
            lo = np.minimum(lo, np.nanmin(x, axis=1))
            hi = np.maximum(hi, np.nanmax(x, axis=1))
    seen = np.isfinite(lo) & np.isfinite(hi)
    return [
        [float(a), float(b)] if ok else [0.0, 0.0] for a, b, ok in zip(lo, hi, seen, strict=True)
    ]


def class_counts(masks: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Pixel count per class (ignore and out-of-range ids excluded)."""
    counts = np.zeros(num_classes, np.int64)
    for m in masks:
        ids = m[(m >= 0) & (m < num_classes)]
        counts += np.bincount(ids.reshape(-1), minlength=num_classes)
    return counts


def median_frequency_weights(counts: np.ndarray, max_weight: float = 10.0) -> np.ndarray:
    """Median-frequency class weights ``median(f) / f``, clipped to ``[1/max, max]``.

    Absent classes get weight 0 (they cannot be learned from this data anyway).
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        return np.ones_like(counts)
    freq = counts / counts.sum()
    med = np.median(freq[present])
    w = np.zeros_like(freq)
    w[present] = np.clip(med / freq[present], 1.0 / max_weight, max_weight)
    return w
