"""Unsupervised adaptation of a trained model to a new region (no labels).

Methods, applied in this order whatever order they are given in:

``hist``
    Per-band histogram matching: inputs are mapped from the target's distribution onto the
    training data's (stored in the checkpoint by ``train``) before normalization.
``stats``
    Replace the input normalization with the target's per-band mean and std.
``adabn``
    Re-estimate every BatchNorm layer's running statistics on target windows.
``tent``
    Entropy minimization: train only the normalization layers' affine parameters so that the
    predictions on target windows become confident (Wang et al., 2021). With ``consistency``
    the entropy is that of the mean prediction over a window and a strongly augmented,
    flipped view of it, so confidence must also hold across looks (Zhang et al., 2022).
``self-training``
    Rounds of confidence-thresholded, class-balanced pseudo-labels (the top fraction of each
    predicted class) and a short fine-tuning on them (Zou et al., 2018). The pseudo-labels come
    from the mean prediction over a window and its mirror image. With ``consistency`` the model
    learns them on strongly augmented views (the demo recipe's colour, blur and noise changes:
    Sohn et al., 2020); with ``curriculum`` round ``r`` of ``R`` keeps only the most confident
    ``fraction * r / R`` of each class, so early rounds learn from the surest pixels.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import ConfigError, InputError
from geoseg.model.checkpoint import ModelMeta
from geoseg.train.augment import AugmentSpec

log = logging.getLogger("geoseg.adapt")
# progress(steps_done, steps_total), or None
Progress = Callable[[int, int], None] | None

METHODS = ("hist", "stats", "adabn", "tent", "self-training")
# fewer valid target pixels than this cannot stand for a region (one 32 x 32 window)
MIN_VALID_PIXELS = 32 * 32
# target windows are held in memory as float32: bound them (2**28 px = 1 GiB per band)
MAX_WINDOW = 8192
MAX_PIXELS = 2**28


def parse_methods(text: str) -> tuple[str, ...]:
    """Split ``"stats,adabn"``, check each name and return them in canonical order."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ConfigError(
            f"method {text!r} is not valid; combine {', '.join(METHODS)} with commas, "
            "e.g. adabn,self-training",
            option="method",
        )
    if "hist" in names and "stats" in names:
        raise ConfigError(
            f"method {text!r} combines hist and stats; choose one (hist matches the whole "
            "distribution of each band, stats only its mean and std)",
            option="method",
        )
    return tuple(m for m in METHODS if m in names)


@dataclass(frozen=True)
class AdaptConfig:
    """Options of ``geoseg adapt``."""

    methods: tuple[str, ...]
    tile: int = 256
    windows: int = 64
    batch_size: int = 8
    tent_steps: int = 40
    tent_lr: float = 1e-3
    rounds: int = 2
    steps: int = 60
    lr: float = 1e-4
    fraction: float = 0.5
    max_threshold: float = 0.9
    consistency: bool = True
    curriculum: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        from geoseg.config import check_fields

        check_fields(self, "adapt option ")  # the one type check of every config
        for name in ("tile", "windows", "batch_size", "rounds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be > 0", option=name)
        for name in ("tent_steps", "steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be >= 0", option=name)
        if self.tile > MAX_WINDOW or self.windows * self.tile**2 > MAX_PIXELS:
            raise ConfigError(
                f"windows {self.windows} of tile {self.tile} px would read "
                f"{self.windows * self.tile**2:,} pixels per band; keep tile <= "
                f"{MAX_WINDOW} and windows x tile^2 <= {MAX_PIXELS:,}",
                option="tile" if self.tile > MAX_WINDOW else "windows",
            )
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction {self.fraction} must be in (0, 1]", option="fraction")
        for name in ("lr", "tent_lr", "max_threshold"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} {value} must be a finite number > 0", option=name)
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed {self.seed} must be in 0..2**63-1", option="seed")


# --------------------------------------------------------------------------- target windows
@dataclass
class TargetWindows:
    """Raw target windows ``(N, bands, S, S)`` float32 and their validity ``(N, S, S)``."""

    data: np.ndarray
    valid: np.ndarray


def expand_paths(patterns: Sequence[str]) -> list[str]:
    """Expand glob patterns; a pattern matching nothing is kept (the reader reports it)."""
    out: list[str] = []
    for p in patterns:
        out.extend(sorted(glob.glob(p)) or [p])
    return out


def sample_windows(
    paths: Sequence[str], size: int, n: int, seed: int, meta: ModelMeta | None = None
) -> TargetWindows:
    """Read ``n`` random ``size`` windows spread evenly over the target rasters.

    With ``meta``, every raster must have the model's band count.
    """
    from geoseg.io.raster import open_raster

    rng = np.random.default_rng(seed)
    sources = [open_raster(p) for p in paths]
    if not sources:
        raise InputError("no target rasters given; pass one or more RASTER paths")
    for p, s in zip(paths, sources, strict=True):
        if meta is not None:
            meta.check_bands(s.info.count, p, "adapt a checkpoint trained on the same bands")
    data, valid = [], []
    for k in range(n):
        src = sources[k % len(sources)]
        h, w = src.info.height, src.info.width
        r = int(rng.integers(0, max(h - size, 0) + 1))
        c = int(rng.integers(0, max(w - size, 0) + 1))
        x, v = src.read(r, c, size, size)
        data.append(x)
        valid.append(v)
    for s in sources:
        s.close()
    return TargetWindows(np.stack(data), np.stack(valid))


# A target whose band means lie further than this (in training standard deviations) from the
# training data's is likely another mix of surfaces, not only another look; matching its
# distribution then moves surfaces onto other classes (Dubai Tile 7: experiments/README.md).
SHIFT_WARNING = 0.5


def warn_if_shifted(t: TargetWindows, meta: ModelMeta, method: str) -> float:
    """Warn (one line) when matching the target's distribution is likely to hurt; the shift."""
    mean, _ = target_stats(t, meta.scale)
    shift = float(np.max(np.abs(np.subtract(mean, meta.mean)) / np.asarray(meta.std)))
    if shift > SHIFT_WARNING:
        log.warning(
            "%s: the target's band means lie %.1f training std from the training data's; "
            "distribution matching assumes the same mix of surfaces and can make predictions "
            "worse: check on a few labelled target images, or use self-training",
            method,
            shift,
        )
    return shift


def target_stats(t: TargetWindows, scale: float) -> tuple[list[float], list[float]]:
    """Per-band mean and std of the target's valid pixels after ``/ scale``."""
    x = np.moveaxis(t.data, 1, 0).reshape(t.data.shape[1], -1).astype(np.float64) / scale
    x = x[:, t.valid.reshape(-1)]
    if x.shape[1] == 0:
        raise InputError(
            "no valid pixels in the target windows (the rasters are nodata where sampled); "
            "adapt on rasters with data, or drop --method stats"
        )
    mean, std = x.mean(1), np.maximum(x.std(1), 1e-6)
    if not np.isfinite(mean + std).all():
        raise InputError(
            f"the target windows' band statistics are not finite (mean {mean.tolist()}): the "
            "rasters hold NaN or infinite values not marked as nodata; set their nodata"
        )
    return mean.tolist(), std.tolist()


def check_target(t: TargetWindows) -> None:
    """Refuse target windows with too few valid pixels to stand for a region."""
    n = int(t.valid.sum())
    if n < MIN_VALID_PIXELS:
        raise InputError(
            f"the target windows hold {n} valid pixel(s) (at least {MIN_VALID_PIXELS} needed): "
            "the rasters are nodata where sampled; adapt on rasters with data, or raise --windows"
        )


def target_quantiles(t: TargetWindows, meta: ModelMeta) -> list[list[float]]:
    """The target's per-band distribution after ``/ scale``, to match onto ``meta.quantiles``."""
    from geoseg.core.histogram import band_quantiles

    if meta.quantiles is None:
        raise InputError(
            "the checkpoint carries no training histograms (trained by an older geoseg); "
            "give them with --histograms FILE, or retrain, or use --method stats"
        )
    raw = band_quantiles(list(t.data), list(t.valid))
    return [[v / meta.scale for v in row] for row in raw]


def read_histograms(path: str, meta: ModelMeta) -> ModelMeta:
    """``meta`` with the training histograms of a JSON file ``{"quantiles": [[...], ...]}``.

    For checkpoints written before ``train`` stored them; the file is checked like the
    checkpoint's own (one distribution per band, finite, non-decreasing).
    """
    import json

    from geoseg.core.histogram import LEVELS, check_quantiles
    from geoseg.io.raster import check_input_file

    check_input_file(path, "histogram file")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.loads(f.read(2**20))
        q = check_quantiles(doc.get("quantiles"), meta.in_channels, f"histogram file {path}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise InputError(
            f"histogram file {path} is not JSON with 'quantiles' ({type(exc).__name__}); "
            f'give {{"quantiles": [[{len(LEVELS)} values] per band]}}'
        ) from None
    except ValueError as exc:
        raise InputError(f"{exc}; give one distribution per band of the model") from None
    return meta.replace(quantiles=q)


# The strong views of tent and self-training: the demo recipe's changes of look
# (configs/train_dubai.yaml) and a left-right flip; no quarter turns, which street scenes lack.
STRONG = AugmentSpec(
    flip=True,
    rot90=False,
    brightness=0.2,
    contrast=0.2,
    per_band=True,
    gamma=0.3,
    saturation=0.3,
    hue=0.05,
    blur=0.2,
    noise=0.05,
)
MIRROR = AugmentSpec(flip=True, rot90=False)


def _inputs(t: TargetWindows, meta: ModelMeta):
    import torch

    from geoseg.model.engine import normalize

    x = normalize(t.data, meta)
    x[np.broadcast_to(~t.valid[:, None], x.shape)] = 0.0
    return torch.from_numpy(x)


def prediction_confidence(
    model, meta: ModelMeta, target: TargetWindows, batch_size: int
) -> tuple[float, float]:
    """Mean winning-class probability and mean normalized entropy over the valid target pixels.

    Printed before and after adaptation, so a user without labels sees what it changed
    (higher confidence is a hint, not proof, of better predictions).
    """
    import torch

    x = _inputs(target, meta)
    conf = ent = 0.0
    model.eval()
    with torch.no_grad():
        for idx in _batches(len(x), batch_size):
            p = model(x[idx]).softmax(1)
            keep = torch.from_numpy(target.valid[idx])
            conf += float(p.max(1).values[keep].sum())
            h = -(p * p.clamp_min(1e-12).log()).sum(1) / math.log(p.shape[1])
            ent += float(h[keep].sum())
    n = max(int(target.valid.sum()), 1)
    return conf / n, ent / n


def _batches(n: int, size: int, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, size):
        yield order[i : i + size]


def _bn_layers(model):
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


# --------------------------------------------------------------------------- methods
def adabn(model, x, batch_size: int) -> None:
    """Replace BatchNorm running statistics by their cumulative average over ``x``."""
    import torch

    layers = _bn_layers(model)
    if not layers:
        raise ConfigError("adabn: the model has no BatchNorm layers; use --method stats or tent")
    model.eval()
    saved = []
    for m in layers:
        saved.append(m.momentum)
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for idx in _batches(len(x), batch_size):
            model(x[idx])
    for m, mom in zip(layers, saved, strict=True):
        m.momentum = mom
    model.eval()


def entropy(logits):
    """Mean per-pixel Shannon entropy of the softmax of ``logits`` (B, K, H, W)."""
    p = logits.softmax(1)
    return -(p * logits.log_softmax(1)).sum(1).mean()


def views(target: TargetWindows, idx, labels: np.ndarray, meta: ModelMeta, spec, rng):
    """Augmented views of target windows ``idx`` and their labels, flipped alike (tensors).

    Nodata pixels are zero in every view, as in ``_inputs``.
    """
    import torch

    from geoseg.train.augment import augment
    from geoseg.train.loop import normalized_look

    xs, ys = [], []
    for i in idx:
        x = normalized_look(target.data[i], meta, spec, rng)
        x, (y, valid) = augment(x, np.stack([labels[i], target.valid[i]]), spec, rng)
        x[:, valid == 0] = 0.0
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))


def _train_norm_layers(model):
    """Freeze all but the BatchNorm layers' affine parameters; those layers in train mode."""
    layers = _bn_layers(model)
    if not layers:
        raise ConfigError("tent: the model has no BatchNorm layers to adapt")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for m in layers:
        m.train()
        params += [p for p in (m.weight, m.bias) if p is not None]
    for p in params:
        p.requires_grad_(True)
    return params


def tent_loss(model, x, strong=None):
    """Entropy of the predictions on ``x``, or of their mean with those on ``strong``.

    ``strong`` holds mirrored, re-coloured views of ``x``; its predictions are mirrored back.
    """
    import torch

    if strong is None:
        return entropy(model(x))
    logits = model(torch.cat([x, strong]))  # one BatchNorm batch for both views
    a, b = logits[: len(x)], logits[len(x) :].flip(-1)
    p = (a.softmax(1) + b.softmax(1)) / 2
    return -(p * p.clamp_min(1e-12).log()).sum(1).mean()


def tent(
    model,
    target: TargetWindows,
    meta: ModelMeta,
    cfg: AdaptConfig,
    progress: Progress = None,
) -> None:
    """Minimize prediction entropy on the target by training only the norm layers' affine."""
    import torch

    params = _train_norm_layers(model)
    x = _inputs(target, meta)
    opt = torch.optim.Adam(params, lr=cfg.tent_lr)
    rng = np.random.default_rng([cfg.seed, 2])
    colours = dataclasses.replace(STRONG, flip=False)
    none = np.zeros(target.valid.shape, np.int64)
    done = 0
    while done < cfg.tent_steps:
        for idx in _batches(len(x), cfg.batch_size, rng):
            strong = None
            if cfg.consistency:
                strong = views(target, idx, none, meta, colours, rng)[0].flip(-1)
            loss = tent_loss(model, x[idx], strong)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if progress is not None:
                progress(done, cfg.tent_steps)
            if done >= cfg.tent_steps:
                break
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()


def pseudo_labels(
    probs: np.ndarray, valid: np.ndarray, fraction: float, max_threshold: float, ignore: int = 255
) -> np.ndarray:
    """Class-balanced pseudo-labels from probabilities ``(N, K, H, W)``.

    Each class keeps its most confident ``fraction`` of pixels (threshold = that quantile of
    the confidence of pixels predicted as the class, capped at ``max_threshold``), so rare
    classes are not drowned by confident frequent ones. Other pixels get ``ignore``.
    """
    conf = probs.max(1)
    pred = probs.argmax(1)
    labels = np.full(pred.shape, ignore, np.int64)
    for k in range(probs.shape[1]):
        sel = (pred == k) & valid
        if not sel.any():
            continue
        thr = min(float(np.quantile(conf[sel], 1 - fraction)), max_threshold)
        keep = sel & (conf >= thr)
        labels[keep] = k
    return labels


def mirrored_probabilities(model, x, batch_size: int) -> np.ndarray:
    """Mean softmax over each window and its mirror image ``(N, K, H, W)``: the teacher."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in _batches(len(x), batch_size):
            p = model(x[i]).softmax(1) + model(x[i].flip(-1)).softmax(1).flip(-1)
            out.append((p / 2).numpy())
    return np.concatenate(out)


def round_fraction(cfg: AdaptConfig, r: int) -> float:
    """The pseudo-labelled fraction of each class in round ``r`` (0-based)."""
    return cfg.fraction * (r + 1) / cfg.rounds if cfg.curriculum else cfg.fraction


def self_train(
    model, target: TargetWindows, meta: ModelMeta, cfg: AdaptConfig, progress: Progress = None
) -> None:
    """Rounds of pseudo-labelling the target and training on the confident, balanced labels."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng([cfg.seed, 3])
    x = _inputs(target, meta)
    spec = STRONG if cfg.consistency else MIRROR
    for r in range(cfg.rounds):
        probs = mirrored_probabilities(model, x, cfg.batch_size)
        y = pseudo_labels(probs, target.valid, round_fraction(cfg, r), cfg.max_threshold)
        log.info("self-training round %d: %.1f%% pixels pseudo-labelled", r + 1,
                 100 * float((y != 255).mean()))  # fmt: skip
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
        model.train()
        done = 0
        while done < cfg.steps:
            for idx in _batches(len(x), cfg.batch_size, rng):
                xb, yb = views(target, idx, y, meta, spec, rng)
                loss = F.cross_entropy(model(xb), yb, ignore_index=255)
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
                if progress is not None:
                    progress(r * cfg.steps + done, cfg.rounds * cfg.steps)
                if done >= cfg.steps:
                    break
    model.eval()


def adapt(
    model,
    meta: ModelMeta,
    target: TargetWindows,
    cfg: AdaptConfig,
    on_method: Callable[[str], None] = lambda name: None,
    progress: Progress = None,
) -> ModelMeta:
    """Adapt ``model`` in place to the target windows; return the (possibly new) metadata.

    ``on_method(name)`` is called as each method starts, ``progress(steps_done, steps)``
    after each optimisation step of ``tent`` and ``self-training``.
    """
    import torch

    torch.manual_seed(cfg.seed)
    check_target(target)
    if "hist" in cfg.methods:
        quantiles = target_quantiles(target, meta)  # refused before anything is reported
        on_method("hist")
        warn_if_shifted(target, meta, "hist")
        meta = meta.replace(input_quantiles=quantiles)
    if "stats" in cfg.methods:
        on_method("stats")
        warn_if_shifted(target, meta, "stats")
        mean, std = target_stats(target, meta.scale)
        meta = meta.replace(mean=mean, std=std)
    if "adabn" in cfg.methods:
        on_method("adabn")
        adabn(model, _inputs(target, meta), cfg.batch_size)
    if "tent" in cfg.methods:
        on_method("tent")
        tent(model, target, meta, cfg, progress)
    if "self-training" in cfg.methods:
        on_method("self-training")
        self_train(model, target, meta, cfg, progress)
    extra = dict(meta.extra, adapted=list(cfg.methods))
    return meta.replace(extra=extra)
