"""Prediction of in-memory images: the planning, batching and stitching of ``geoseg predict``.

For evaluation with a model, training validation and tests, where images are already arrays.
"""

from __future__ import annotations

import numpy as np

from geoseg.core.plan import class_dtype, evaluate_batch, make_plan, run_plan


def predict_array(
    engine,
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    tile: int | tuple[int, int] | None = None,
    overlap: int | tuple[int, int] = 128,
    blend: str = "gaussian",
    batch_size: int = 4,
    return_probs: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Tiled, blended prediction of an in-memory image, in this process.

    The same planning, batching and stitching as ``geoseg predict``, without a scheduler or
    files: for evaluation, training validation and tests.

    Parameters
    ----------
    engine : Engine
        The inference engine.
    image : ndarray
        (bands, H, W) raw pixel values.
    valid : ndarray, optional
        (H, W) bool mask of pixels with data (default: all).
    tile, overlap, blend, batch_size
        As for ``geoseg predict``; ``tile`` defaults to the model's training tile size.
    return_probs : bool
        Also return the blended probabilities (classes, H, W).

    Returns
    -------
    ndarray
        (H, W) class map (uint8, or uint16 above 255 classes), nodata (255/65535) where no
        valid pixel was predicted; with ``return_probs`` a ``(classes, probs)`` pair.
    """
    from geoseg.io.raster import ArraySource

    source = ArraySource(image, valid)
    h, w = image.shape[-2:]
    plan = make_plan(
        h,
        w,
        tile=tile or engine.meta.tile_size,
        overlap=overlap,
        batch_size=batch_size,
        blend=blend,
        block_size=max(h, w),
    )
    k = engine.meta.classes
    dtype, nodata = class_dtype(k)
    results = (
        evaluate_batch(
            lambda win: source.read(win.row, win.col, win.height, win.width),
            engine.predict_proba,
            plan.grid,
            b,
        )
        for b in plan.batches
    )
    classes = np.full((h, w), nodata, dtype)
    probs = np.zeros((k, h, w), np.float32) if return_probs else None
    for block in run_plan(plan, results, k, nodata=nodata, dtype=dtype, probabilities=return_probs):
        rs, cs = block.window.slices()
        classes[rs, cs] = block.classes
        if probs is not None:
            probs[:, rs, cs] = block.probs
    return (classes, probs) if return_probs else classes
