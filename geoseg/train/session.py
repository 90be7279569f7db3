"""Assemble a training or fine-tuning run: data, statistics, model, loss, run directory."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.core.histogram import band_quantiles
from geoseg.errors import CheckpointError, ConfigError, DatasetError
from geoseg.model.checkpoint import ModelMeta, build_model
from geoseg.model.engine import kept_torch_threads
from geoseg.train import stats
from geoseg.train.config import TrainConfig
from geoseg.train.loop import Callbacks, FitState, fit, state_from_dict
from geoseg.train.runs import RunDir
from geoseg.train.sources import Sample, load_samples

log = logging.getLogger("geoseg.train")


@dataclass
class Result:
    """What a run produced."""

    run: RunDir
    meta: ModelMeta
    state: FitState
    train_count: int
    val_count: int


def fresh_meta(cfg: TrainConfig, train: list[Sample], extra: dict[str, Any]) -> ModelMeta:
    """Metadata of a new model: classes from the config, normalization from the data."""
    scale = stats.default_scale(train[0].image.dtype)
    valid = None
    if any(s.valid is not None for s in train):
        valid = [np.ones(s.mask.shape, bool) if s.valid is None else s.valid for s in train]
    mean, std = stats.band_stats([s.image for s in train], scale=scale, nodata_valid=valid)
    if not np.isfinite(mean + std).all():
        raise DatasetError(
            f"the training images' band statistics are not finite (mean {mean}); they hold "
            "NaN or infinite pixel values: mark those pixels as nodata"
        )
    value_range = stats.band_range([s.image for s in train], nodata_valid=valid)
    # quantiles of raw / scale are the raw quantiles / scale: no scaled copy of the data
    raw_q = band_quantiles([s.image for s in train], valid)
    quantiles = [[v / scale for v in row] for row in raw_q]
    return ModelMeta(
        arch=cfg.arch,
        encoder=cfg.encoder,
        in_channels=train[0].image.shape[0],
        classes=len(cfg.dataset),
        class_names=list(cfg.dataset.names),
        colours=list(cfg.dataset.colours),
        mean=mean,
        std=std,
        scale=scale,
        tile_size=cfg.chip_size,
        model_options=dict(cfg.model_options),
        extra=extra,
        value_range=value_range,
        quantiles=quantiles,
    )


def start_from(cfg: TrainConfig, init: str, train: list[Sample], extra: dict[str, Any]):
    """Model and metadata for fine-tuning the checkpoint ``init`` (new head if classes differ).

    The checkpoint's normalization is kept, so the pretrained features see what they learned on.
    """
    from geoseg.model.checkpoint import load_checkpoint
    from geoseg.train.finetune import with_new_classes

    model, meta = load_checkpoint(init)
    meta.check_bands(
        train[0].image.shape[0], "the training data", "use a checkpoint trained on the same bands"
    )
    new_extra = dict(extra, finetuned_from=str(init))
    names = list(cfg.dataset.names)
    if names and names != meta.class_names:
        new_meta = meta.replace(
            classes=len(names),
            class_names=names,
            colours=list(cfg.dataset.colours),
            extra=new_extra,
        )
        return with_new_classes(model, meta, new_meta, cfg.class_map), new_meta
    return model, meta.replace(extra=new_extra)


def class_weights(cfg: TrainConfig, train: list[Sample], k: int) -> np.ndarray | None:
    """Cross-entropy class weights from the config (``auto`` = median frequency)."""
    if cfg.class_weights == "none":
        return None
    if cfg.class_weights == "auto":
        return stats.median_frequency_weights(stats.class_counts([s.mask for s in train], k))
    return np.asarray(cfg.class_weights, np.float32)


def _inputs(cfg: TrainConfig, init: str | None) -> list[str]:
    """Every path the run reads (never written, never inside a replaced run)."""
    paths = [init] if init else []
    for spec in (*cfg.train, *cfg.val):
        paths += [p for p in (spec.path, spec.labels) if p]
    return paths


def _check_chip_size(cfg: TrainConfig, train: list[Sample]) -> None:
    side = max(max(s.mask.shape) for s in train)
    if cfg.chip_size > side:
        raise ConfigError(
            f"chip_size {cfg.chip_size} is larger than every training image (largest side "
            f"{side} px); chips would be mostly padding: use --chip-size {side} or less"
        )


def _with_init_classes(cfg: TrainConfig, init: str | None) -> TrainConfig:
    if init is not None and not cfg.dataset.classes:
        from geoseg.data.config import ClassSpec
        from geoseg.model.checkpoint import read_meta

        m = read_meta(init)
        classes = tuple(ClassSpec(n, c) for n, c in zip(m.class_names, m.colours, strict=True))
        cfg = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, classes=classes))
    if not cfg.dataset.classes:
        raise ConfigError("no classes given; add classes: [{name, colour}, ...] to the config")
    return cfg


def _resumed(run: RunDir, meta: ModelMeta):
    """The model and state of ``run/last``, checked against this run's model."""
    from geoseg.model.checkpoint import load_checkpoint

    model, last = load_checkpoint(run.last)
    if (last.arch, last.encoder, last.in_channels, last.class_names) != (
        meta.arch,
        meta.encoder,
        meta.in_channels,
        meta.class_names,
    ):
        raise CheckpointError(
            f"{run.last} holds a {last.arch}/{last.encoder} model for {last.in_channels} bands "
            f"and classes {last.class_names}, not this run's; restart without --resume"
        )
    resume_state = run.load_state()
    return model, resume_state, state_from_dict(resume_state)


def _samples(cfg: TrainConfig) -> tuple[list, list]:
    """The training and validation samples, their chip size checked."""
    train = load_samples(cfg.train, cfg, "training")
    val = load_samples(cfg.val, cfg, "validation") if cfg.val else []
    _check_chip_size(cfg, train)
    log.info("%d training and %d validation samples", len(train), len(val))
    return train, val


@kept_torch_threads()  # ``num_threads`` holds for this run only
def _start(cfg: TrainConfig, init: str | None, train: list[Sample], extra: dict[str, Any]):
    """The seeded starting model and its metadata: fresh, or the checkpoint ``init``."""
    import torch

    torch.manual_seed(cfg.seed)
    if init is not None:
        return start_from(cfg, init, train, extra)
    meta = fresh_meta(cfg, train, extra)
    return build_model(meta), meta


def run_training(
    cfg: TrainConfig,
    out: str,
    *,
    init: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    command: str = "",
    callbacks: Callbacks | None = None,
) -> Result:
    """Train (or fine-tune from ``init``) into the run directory ``out``.

    Everything (output, data, model, device, resumable state) is checked before anything is
    written; a run that fails before its first epoch is saved leaves no trace. Torch's thread
    count is restored on return.

    Returns
    -------
    Result
        The run, final metadata and progress.
    """
    import torch

    from geoseg.model.engine import resolve_device, resolve_precision
    from geoseg.train.losses import make_loss

    cfg = _with_init_classes(cfg, init)
    run = RunDir(out)
    run.check(cfg.to_dict(), cfg.fingerprint(), resume, overwrite, _inputs(cfg, init))
    device = resolve_device(cfg.device)
    resolve_precision(cfg.precision, device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    train, val = _samples(cfg)
    extra = {
        "command": command,
        "train_samples": [s.name for s in train],
        "val_samples": [s.name for s in val],
    }
    model, meta = _start(cfg, init, train, extra)
    state, resume_state = None, None
    if resume:
        model, resume_state, state = _resumed(run, meta)
    weights = class_weights(cfg, train, meta.classes)
    loss_fn = make_loss(
        cfg.loss, cfg.loss_weights, weights, cfg.dataset.ignore_index, cfg.focal_gamma
    )
    run.start(cfg.to_dict(), cfg.fingerprint(), resume)
    try:
        state = fit(
            cfg, model, meta, train, val, run, loss_fn, device, state, resume_state, callbacks
        )
        run.commit()
    except BaseException:
        run.abort()
        raise
    return Result(run, meta, state, len(train), len(val))
