"""The training loop: seeded chips, normalization as at inference, AdamW, exact resumption.

Everything random is derived from ``(seed, epoch)``, and the learning rate is a pure function
of the global step, so an interrupted run resumed from ``last/`` reproduces the uninterrupted
run's weights exactly (given the same device and thread count).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoseg.model.checkpoint import ModelMeta
from geoseg.train import chips as chipmod
from geoseg.train.augment import AugmentSpec, augment, colour, resize_chip
from geoseg.train.config import TrainConfig
from geoseg.train.sources import Sample


# --------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, base: float, schedule: str, warmup: int = 0) -> float:
    """Learning rate at ``step`` (0-based) of ``total``: cosine, one-cycle or constant."""
    if schedule == "onecycle":
        peak = max(int(0.3 * total), 1)
        if step < peak:
            return base * (0.04 + 0.96 * step / peak)
        t = (step - peak) / max(total - peak, 1)
        return base * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t)))
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    t = (step - warmup) / max(total - warmup, 1)
    return base * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


# --------------------------------------------------------------------------- chips
def epoch_chips(
    cfg: TrainConfig,
    shapes: list[tuple[int, int]],
    index: chipmod.ClassIndex | None,
    epoch: int,
) -> list[chipmod.ChipRef]:
    """The chips of ``epoch`` (a pure function of the config, the data and the epoch)."""
    rng = np.random.default_rng([cfg.seed, epoch, 0])
    if cfg.sampling == "grid":
        refs = chipmod.grid_chips(shapes, cfg.chip_size, cfg.grid_overlap)
        return [refs[i] for i in rng.permutation(len(refs))]
    if cfg.class_balanced and index is not None:
        half = cfg.chips_per_epoch // 2
        bal = chipmod.balanced_chips(shapes, index, cfg.chip_size, half, rng, cfg.scale_range)
        rnd = chipmod.random_chips(
            shapes, cfg.chip_size, cfg.chips_per_epoch - half, rng, cfg.scale_range
        )
        refs = bal + rnd
        return [refs[i] for i in rng.permutation(len(refs))]
    return chipmod.random_chips(shapes, cfg.chip_size, cfg.chips_per_epoch, rng, cfg.scale_range)


def augment_spec(cfg: TrainConfig) -> AugmentSpec:
    """The chip augmentations a training config asks for."""
    names = [f.name for f in dataclasses.fields(AugmentSpec)]
    return AugmentSpec(**{n: getattr(cfg, n) for n in names})


def normalized_look(
    x: np.ndarray, meta: ModelMeta, spec: AugmentSpec, rng: np.random.Generator
) -> np.ndarray:
    """Normalize raw values, changing their colours in scaled units first when ``spec`` asks.

    Training and adaptation's strong views share it, so both see the same looks.
    """
    from geoseg.model.engine import scale_input, standardize

    scaled = scale_input(x, meta)
    return standardize(colour(scaled, rng, spec) if spec.colour else scaled, meta)


def make_batch(
    samples: list[Sample],
    refs: list[chipmod.ChipRef],
    meta: ModelMeta,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut, normalize (:func:`geoseg.model.engine.normalize`), resize and augment a batch."""
    spec = augment_spec(cfg)
    xs, ys = [], []
    for ref in refs:
        s = samples[ref.index]
        x = normalized_look(chipmod.cut(s.image, ref, 0), meta, spec, rng)
        y = chipmod.cut(s.mask, ref, cfg.dataset.ignore_index)
        x, y = resize_chip(x, y, cfg.chip_size)
        x, y = augment(x, y, spec, rng)
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.stack(ys).astype(np.int64)


# --------------------------------------------------------------------------- steps
@dataclass
class StepInfo:
    """Reported after each optimisation step."""

    epoch: int
    step: int
    steps: int
    loss: float
    lr: float


@dataclass
class Callbacks:
    """Progress hooks: ``on_step(StepInfo)``, ``on_validate(done, total)``, ``on_epoch(row)``."""

    on_step: Callable[[StepInfo], None] = lambda info: None
    on_epoch: Callable[[dict[str, Any]], None] = lambda row: None
    on_validate: Callable[[int, int], None] = lambda done, total: None


def set_train_mode(model, freeze_encoder: bool) -> None:
    """Training mode; a frozen encoder keeps its BatchNorm statistics (eval mode)."""
    model.train()
    if freeze_encoder:
        model.encoder.eval()


def freeze(model, freeze_encoder: bool) -> list:
    """Mark encoder parameters frozen when asked; return the trainable parameters."""
    for p in model.encoder.parameters():
        p.requires_grad_(not freeze_encoder)
    return [p for p in model.parameters() if p.requires_grad]


def train_step(model, optimizer, loss_fn, x, y, lr: float, device: str, autocast_dtype) -> float:
    """One AdamW step at learning rate ``lr``; returns the loss."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    xb = torch.from_numpy(x).to(device)
    yb = torch.from_numpy(y).to(device)
    with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(xb)
    loss = loss_fn(logits.float(), yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------- fit
@dataclass
class FitState:
    """Training progress: completed epochs, global step, best score and the log rows."""

    epoch: int = 0
    step: int = 0
    best_miou: float = -1.0
    best_epoch: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def _autocast_dtype(device: str, precision: str):
    import torch

    if device != "cuda" or precision == "fp32":
        return None
    return torch.float16 if precision == "fp16" else torch.bfloat16


def fit(
    cfg: TrainConfig,
    model,
    meta: ModelMeta,
    train: list[Sample],
    val: list[Sample],
    run,
    loss_fn,
    device: str = "cpu",
    state: FitState | None = None,
    resume_state: dict[str, Any] | None = None,
    callbacks: Callbacks | None = None,
) -> FitState:
    """Train ``model`` for ``cfg.epochs`` epochs, validating and checkpointing each epoch.

    Parameters
    ----------
    cfg : TrainConfig
        Options.
    model : torch.nn.Module
        The model (already initialised: fresh, fine-tune start, or resumed weights).
    meta : ModelMeta
        Metadata written with each checkpoint (normalization is used for the chips).
    train, val : list of Sample
        Training and validation samples (``val`` may be empty: then the last epoch is kept).
    run : RunDir
        Where checkpoints, state and the log go.
    loss_fn : callable
        From :func:`geoseg.train.losses.make_loss`.
    device : str
        ``cpu`` or ``cuda``.
    state, resume_state : optional
        Progress and the loaded ``train_state.pt`` when resuming.
    callbacks : Callbacks, optional
        Progress hooks.

    Returns
    -------
    FitState
    """
    cb = callbacks or Callbacks()
    state = state or FitState()
    model.to(device)
    epoch_run = _EpochRun.prepare(cfg, model, meta, train, loss_fn, device)
    optimizer = epoch_run.optimizer
    steps = epoch_run.steps()
    if resume_state is not None:
        _restore(optimizer, resume_state, run)
        _check_resumed_steps(state, steps, run)
    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        row = epoch_run.train(epoch, steps, state, cb)
        improved = _validate(model, meta, val, device, cfg, state, row, cb.on_validate)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        _record_epoch(run, epoch_run, state, row, improved)
        cb.on_epoch(row)
    model.eval()
    return state


def _record_epoch(run, epoch_run: _EpochRun, state: FitState, row, improved: bool) -> None:
    """Log the finished epoch and save it durably: ``last/`` always, ``best/`` if improved."""
    model, meta, cfg = epoch_run.model, epoch_run.meta, epoch_run.cfg
    state.epoch = row["epoch"]
    state.rows.append(row)
    if improved:
        state.best_miou = row.get("val_miou", float("nan"))
        state.best_epoch = row["epoch"]
        run.save_best(model, _with_extra(meta, row, cfg))
    run.save_last(model, _with_extra(meta, row, cfg), _state_dict(state, epoch_run.optimizer))
    run.write_log(state.rows)
    run.commit()


def _check_resumed_steps(state: FitState, steps: int, run) -> None:
    """Refuse a resumed state whose global step does not fit this run's steps per epoch."""
    if state.step != steps * state.epoch:
        from geoseg.errors import CheckpointError

        raise CheckpointError(
            f"{run.last}/train_state.pt records step {state.step} after {state.epoch} epochs, "
            f"but this run takes {steps} steps per epoch ({steps * state.epoch} in all); the "
            "state is tampered or the training data changed: restart without --resume"
        )


@dataclass
class _EpochRun:
    """What every epoch of one :func:`fit` trains with."""

    cfg: TrainConfig
    model: Any
    meta: ModelMeta
    samples: list[Sample]
    optimizer: Any
    loss_fn: Any
    device: str
    shapes: list[tuple[int, int]]
    index: Any

    @classmethod
    def prepare(cls, cfg: TrainConfig, model, meta: ModelMeta, train, loss_fn, device: str):
        """The optimizer over the trainable parameters and the class index for sampling."""
        import torch

        params = freeze(model, cfg.freeze_encoder)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        shapes = [s.mask.shape for s in train]
        index = None
        if cfg.class_balanced and cfg.sampling == "random":
            index = chipmod.ClassIndex.build([s.mask for s in train], meta.classes, seed=cfg.seed)
        return cls(cfg, model, meta, train, optimizer, loss_fn, device, shapes, index)

    def steps(self) -> int:
        """Optimisation steps per epoch (the same every epoch)."""
        chips = epoch_chips(self.cfg, self.shapes, self.index, 0)
        return math.ceil(len(chips) / self.cfg.batch_size)

    def train(self, epoch: int, steps: int, state: FitState, cb: Callbacks) -> dict[str, Any]:
        """One epoch of optimisation steps; returns its log row (loss, lr, global step)."""
        cfg = self.cfg
        refs = epoch_chips(cfg, self.shapes, self.index, epoch)
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        set_train_mode(self.model, cfg.freeze_encoder)
        ac = _autocast_dtype(self.device, cfg.precision)
        total = steps * cfg.epochs
        losses, lr = [], cfg.lr
        for b in range(steps):
            chips = refs[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x, y = make_batch(self.samples, chips, self.meta, cfg, rng)
            lr = lr_at(state.step, total, cfg.lr, cfg.schedule, cfg.warmup_steps)
            loss = train_step(self.model, self.optimizer, self.loss_fn, x, y, lr, self.device, ac)
            losses.append(loss)
            state.step += 1
            cb.on_step(StepInfo(epoch + 1, b + 1, steps, loss, lr))
        mean = float(np.mean(losses))
        return {"epoch": epoch + 1, "step": state.step, "lr": lr, "train_loss": mean}


def _validate(
    model, meta, val, device: str, cfg: TrainConfig, state: FitState, row, progress=None
) -> bool:
    """Score ``val`` into ``row`` (mIoU, per-class IoU); whether the epoch is the best yet."""
    from geoseg.train.evaluation import evaluate_samples

    if not val:
        return True  # without validation the latest epoch is kept
    sc = evaluate_samples(model, meta, val, device, cfg.dataset.ignore_index, progress)
    row["val_miou"] = sc.miou
    row.update({f"iou_{n}": v for n, v in zip(sc.class_names, sc.iou, strict=True)})
    return sc.miou > state.best_miou


def _restore(optimizer, resume_state: dict[str, Any], run) -> None:
    """Restore the optimizer and torch RNG of a resumed run (a tampered state is refused)."""
    import torch

    from geoseg.errors import CheckpointError

    try:
        optimizer.load_state_dict(resume_state["optimizer"])
        torch.set_rng_state(resume_state["torch_rng"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        msg = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(
            f"{run.last}/train_state.pt does not fit this run's optimizer ({msg}); restart "
            "without --resume"
        ) from None


def _with_extra(meta: ModelMeta, row: dict[str, Any], cfg: TrainConfig) -> ModelMeta:
    extra = dict(meta.extra)
    extra.update({"epoch": row["epoch"], "val_miou": row.get("val_miou")})
    extra["val_iou"] = {k[4:]: v for k, v in row.items() if k.startswith("iou_")}
    return meta.replace(extra=extra, tile_size=meta.tile_size)


def _state_dict(state: FitState, optimizer) -> dict[str, Any]:
    import torch

    return {
        "epoch": state.epoch,
        "step": state.step,
        "best_miou": state.best_miou,
        "best_epoch": state.best_epoch,
        "rows": [
            {k: (float(v) if isinstance(v, float) else v) for k, v in r.items()} for r in state.rows
        ],
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }


def state_from_dict(d: dict[str, Any]) -> FitState:
    """Rebuild :class:`FitState` from a loaded ``train_state.pt``."""
    return FitState(d["epoch"], d["step"], d["best_miou"], d["best_epoch"], list(d["rows"]))
