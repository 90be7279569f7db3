"""geoseg's Python API: the commands' work as functions, for notebooks and pipelines.

Each function applies geoseg's process-wide settings (:func:`geoseg.runtime.configure`) and
raises :class:`geoseg.errors.GeosegError` subclasses with the same one-line messages the CLI
prints. Options are the CLI's, spelled as Python keywords (``block_size=1024``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

PathLike = str | os.PathLike


def predict_file(
    input: PathLike,
    output: PathLike,
    model: PathLike,
    config: Any = None,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    client: Any = None,
    resume: bool = False,
    **options: Any,
) -> Any:
    """Segment ``input`` into the class map ``output``, as ``geoseg predict`` does.

    Parameters
    ----------
    input, output : path-like
        A raster GDAL reads; a ``.tif``/``.tiff`` or ``.zarr`` class map to write.
    model : path-like
        A geoseg checkpoint folder.
    config : geoseg.config.PredictConfig, optional
        All options at once; or give them as keywords (``**options``), not both.
    overwrite, resume : bool
        As ``--overwrite`` and ``--resume``.
    progress : callable, optional
        ``progress(windows_done, windows_total)``.
    client : distributed.Client, optional
        Run on this Dask client (otherwise ``workers=N``, ``scheduler=ADDRESS`` or Dask's
        ``scheduler-address`` setting, else an in-process cluster).
    **options
        Fields of :class:`geoseg.config.PredictConfig` (``tile``, ``blend``, ``device``...).

    Returns
    -------
    geoseg.run.pipeline.Summary
        Windows, pixels, time and peak memory of the run.
    """
    from geoseg.config import PredictConfig
    from geoseg.errors import ConfigError
    from geoseg.run import pipeline
    from geoseg.run.scheduling import default_scheduler
    from geoseg.runtime import configure

    configure()
    if config is not None and options:
        raise ConfigError(f"give config or options ({', '.join(options)}), not both")
    cfg = config if config is not None else PredictConfig(**options)
    cfg = dataclasses.replace(cfg, scheduler=default_scheduler(cfg.workers, cfg.scheduler))
    return pipeline.predict_file(
        input, output, model, cfg, overwrite=overwrite, progress=progress, client=client,
        resume=resume,
    )  # fmt: skip


def evaluate(
    prediction: PathLike,
    label: PathLike,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = 255,
    align: bool = False,
    block_size: int = 2048,
    workers: int | None = None,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Score a class map against a label raster, as ``geoseg evaluate PRED LABEL`` does.

    Returns
    -------
    geoseg.core.metrics.EvalResult
        mIoU and per-class IoU, accuracy, precision and dice, with the confusion matrix
        (``.to_dict()`` gives what ``--json`` writes).
    """
    from geoseg.core.metrics import summarize
    from geoseg.run.scoring import PairSpec, evaluate_pair, pair_classes
    from geoseg.runtime import configure

    configure()
    num_classes, names = pair_classes(str(prediction), num_classes)
    spec = PairSpec(str(prediction), str(label), num_classes, ignore_index, align)
    cm, _ = evaluate_pair(
        spec, block_size=block_size, workers=workers, client=client, progress=progress
    )
    return summarize(cm, names)


def vectorize(classmap: PathLike, output: PathLike, **options: Any) -> Any:
    """Polygons of a class map, as ``geoseg vectorize`` writes them (see :mod:`geoseg.run.vector`).

    ``options`` are :func:`geoseg.run.vector.vectorize`'s: ``simplify``, ``min_area`` (e.g.
    ``"500m2"``), ``block_size``, ``overwrite``, ``progress``.
    """
    from geoseg.run.vector import vectorize as run
    from geoseg.runtime import configure

    configure()
    return run(classmap, output, **options)


def stats(classmap: PathLike, aoi: PathLike | None = None, **options: Any) -> Any:
    """Per-class pixel counts, areas and shares, as ``geoseg stats`` prints them.

    ``options`` are :func:`geoseg.run.class_stats.class_stats`'s (``block_size``, ``nodata``,
    ``aoi_field``, ``progress``); the result has ``.rows()``, ``.table()``, ``.to_json()``
    and ``.to_csv()``.
    """
    from geoseg.run.class_stats import class_stats
    from geoseg.runtime import configure

    configure()
    return class_stats(classmap, aoi, **options)
