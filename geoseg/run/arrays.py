"""Prediction of in-memory images: the planning, batching and stitching of ``geoseg predict``.

For evaluation with a model, training validation and tests, where images are already arrays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from geoseg.config import PredictConfig
from geoseg.core.plan import Plan, assemble_blocks, class_dtype, evaluate_batch, make_plan
from geoseg.core.strips import Finish, Rows, blend_strip, ordered_rows


def predict_array(
    engine,
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    tile: int | tuple[int, int] | None = None,
    overlap: int | tuple[int, int] = 128,
    blend: str = "gaussian",
    batch_size: int = 4,
) -> np.ndarray:
    """Tiled, blended prediction of an in-memory image, in this process.

    The same planning, strips, batching and blending as ``geoseg predict``, without a scheduler
    or files: for evaluation, training validation and tests.

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

    Returns
    -------
    ndarray
        (H, W) class map (uint8, or uint16 above 255 classes), nodata (255/65535) where no
        valid pixel was predicted.
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
    finish = Finish(nodata, dtype)

    def read(win):
        return source.read(win.row, win.col, win.height, win.width)

    results = (
        blend_strip(
            plan.grid,
            strip,
            (
                evaluate_batch(read, engine.predict_proba, plan.grid, b)
                for b in plan.strip_batches(strip)
            ),
            k,
            plan.blend,
            finish,
        )
        for strip in plan.strips
    )
    return assemble(plan, ordered_rows(results, finish), finish, k)


def assemble(plan: Plan, pieces: Iterable[Rows], finish: Finish, k: int) -> np.ndarray:
    """The class map of a whole image from its finished rows in order."""
    h, w = plan.grid.height, plan.grid.width
    classes = np.full((h, w), finish.nodata, finish.dtype)
    for block in assemble_blocks(plan, pieces, finish, k):
        rs, cs = block.window.slices()
        classes[rs, cs] = block.classes
    return classes


class ImagePredictor:
    """``geoseg predict``'s path for in-memory images: one Dask client, the model cached on it.

    Each image is planned, run in batches on the client's worker threads (in parallel, as
    predict runs a raster) and stitched in order: the class map equals what ``geoseg predict``
    writes for the same pixels and options. Use as a context manager (the client is closed).
    """

    def __init__(self, checkpoint: str, cfg: PredictConfig, client: Any = None) -> None:
        self.checkpoint, self.cfg, self._client = checkpoint, cfg, client
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ImagePredictor:
        from geoseg.model.checkpoint import read_meta
        from geoseg.model.engine import cached_engine, kept_torch_threads, resolve_device
        from geoseg.run.pipeline import engine_spec
        from geoseg.run.scheduling import dask_client

        cfg = self.cfg
        self.meta = read_meta(self.checkpoint)
        self.device = resolve_device(cfg.device)
        self.client = self._stack.enter_context(
            dask_client(cfg.workers, cfg.scheduler, client=self._client)
        )
        self._stack.enter_context(kept_torch_threads())
        self.spec = engine_spec(self.checkpoint, self.device, cfg, self.client)
        self.engine = cached_engine(self.spec)  # a corrupt checkpoint fails here, once
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __call__(self, image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The class map of ``image`` (bands, H, W): uint8/uint16, nodata where nothing ran."""
        from geoseg.io.raster import ArraySource
        from geoseg.run.pipeline import auto_batch_size, default_overlap
        from geoseg.run.scheduling import strip_pieces, total_threads

        cfg, h, w = self.cfg, *image.shape[-2:]
        tile = cfg.tile or self.meta.tile_size
        plan = make_plan(
            h,
            w,
            tile=tile,
            overlap=default_overlap(cfg.overlap, tile),
            batch_size=cfg.batch_size or auto_batch_size(self.device, tile),
            blend=cfg.blend,
            block_size=max(h, w),
        )
        in_flight = cfg.prefetch * total_threads(self.client)
        # sent to the workers once, not pickled into every task
        source = self.client.scatter(ArraySource(image, valid), hash=False)
        k = self.meta.classes
        dtype, nodata = class_dtype(k)
        finish = Finish(nodata, dtype)
        try:
            pieces = strip_pieces(self.client, source, plan, self.spec, finish, in_flight)
            return assemble(plan, (rows for rows, _ in pieces), finish, k)
        finally:
            source.release()
