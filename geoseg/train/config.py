"""Checked training configuration: YAML (``configs/train_*.yaml``) plus CLI overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from geoseg.config import check_fields
from geoseg.data.config import DATASET_KEYS, DatasetConfig
from geoseg.errors import ConfigError
from geoseg.model.checkpoint import MAX_TILE
from geoseg.model.engine import Device, Precision

SourceKind = Literal["folder", "raster", "vector", "ade20k", "cityscapes"]
Sampling = Literal["random", "grid"]
Schedule = Literal["cosine", "onecycle", "constant"]
LOSS_NAMES = ("ce", "dice", "focal", "lovasz")
# options that may differ between a run and its resumption (a changed ``epochs`` re-plans the
# learning-rate schedule over the new total, so the result then differs from an uninterrupted
# run of either length)
RESUMABLE_CHANGES = ("epochs", "device", "precision", "num_threads")


@dataclass(frozen=True)
class SourceSpec:
    """One labelled data source.

    ``kind`` is ``folder`` (``path`` holds ``images/`` and ``masks/``; glob patterns allowed),
    ``raster`` (``path`` image raster + ``labels`` label raster), ``vector`` (``path`` image
    raster + ``labels`` GeoJSON/GeoPackage polygons with attribute ``class_attr``), or
    ``ade20k`` / ``cityscapes`` (the evaluation readers). ``include`` / ``exclude`` are glob
    patterns on sample names.
    """

    kind: SourceKind
    path: str
    labels: str | None = None
    class_attr: str = "class"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_any(cls, value: Any) -> SourceSpec:
        """Build from a YAML mapping or a ``"kind:path"`` string."""
        if isinstance(value, SourceSpec):
            return value
        if isinstance(value, str):
            kind, sep, path = value.partition(":")
            if not sep:
                kind, path = "folder", value
            value = {"kind": kind, "path": path}
        if not isinstance(value, dict) or "path" not in value:
            raise ConfigError(
                f"data source {value!r} is not valid; expected 'folder:PATH' or a mapping "
                "with kind and path"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ConfigError(
                f"unknown data-source key(s) {sorted(unknown)}; valid: {sorted(known)}"
            )
        kw = dict(value)
        kw.setdefault("kind", "folder")
        for key in ("path", "labels", "class_attr"):
            v = kw.get(key, "")
            if not (isinstance(v, str) or (key == "labels" and v is None)):
                raise ConfigError(f"data-source {key} {kw[key]!r} is not valid; give a string")
        if kw["kind"] not in SourceKind.__args__:
            raise ConfigError(
                f"data-source kind {kw['kind']!r} is not valid; expected one of "
                f"{', '.join(SourceKind.__args__)}"
            )
        for key in ("include", "exclude"):
            v = kw.get(key, ())
            kw[key] = (v,) if isinstance(v, str) else tuple(v) if isinstance(v, list) else v
            if not isinstance(kw[key], tuple) or not all(isinstance(p, str) for p in kw[key]):
                raise ConfigError(f"data-source {key} {v!r} is not a list of glob patterns")
        return cls(**kw)


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``geoseg train`` / ``geoseg finetune`` (see ``configs/train_dubai.yaml``)."""

    # data: the sources, and the dataset config (classes, label encoding) they share
    train: tuple[SourceSpec, ...] = ()
    val: tuple[SourceSpec, ...] = ()
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    align: bool = False
    # model
    arch: str = "unet"
    encoder: str = "resnet18"
    model_options: dict[str, Any] = field(default_factory=dict)
    # chips
    chip_size: int = 256
    sampling: Sampling = "random"
    class_balanced: bool = False
    chips_per_epoch: int = 512
    grid_overlap: int = 0
    # augmentation
    flip: bool = True
    rot90: bool = True
    scale_range: tuple[float, float] | None = None
    brightness: float = 0.0
    contrast: float = 0.0
    per_band: bool = False
    gamma: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    # loss and optimisation
    loss: tuple[str, ...] = ("ce",)
    loss_weights: tuple[float, ...] | None = None
    class_weights: Literal["none", "auto"] | tuple[float, ...] = "none"
    focal_gamma: float = 2.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Schedule = "cosine"
    warmup_steps: int = 0
    epochs: int = 10
    batch_size: int = 8
    freeze_encoder: bool = False
    class_map: dict[str, str] = field(default_factory=dict)
    # run
    seed: int = 0
    device: Device = "auto"
    precision: Precision = "auto"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        check_fields(self, "training option ")
        for name in ("chip_size", "chips_per_epoch", "epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be positive", option=name)
        _check_ranges(self)
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(
                f"lr {self.lr} must be a finite number > 0; e.g. 1e-3 (1e-4 to fine-tune)",
                option="lr",
            )
        bad = [n for n in self.loss if n not in LOSS_NAMES]
        if bad or not self.loss:
            raise ConfigError(
                f"loss {'+'.join(self.loss)!r} is not valid; combine {', '.join(LOSS_NAMES)} "
                "with '+', e.g. 'ce+dice'",
                option="loss",
            )
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss):
            raise ConfigError(
                f"{len(self.loss_weights)} loss_weights for {len(self.loss)} losses; give one each"
            )
        k = len(self.dataset)
        if isinstance(self.class_weights, tuple) and k and len(self.class_weights) != k:
            raise ConfigError(
                f"{len(self.class_weights)} class_weights for {k} classes; "
                "give one per class or 'auto'"
            )
        if self.scale_range is not None:
            if len(self.scale_range) != 2:
                raise ConfigError(
                    f"scale_range {list(self.scale_range)} must be [low, high]",
                    option="scale_range",
                )
            lo, hi = self.scale_range
            if not 0 < lo <= hi or not math.isfinite(hi):
                raise ConfigError(
                    f"scale_range {self.scale_range} must be 0 < low <= high", option="scale_range"
                )

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serializable dict, flat as the config file (dataset keys at the top)."""
        d = dataclasses.asdict(self)
        d.update(d.pop("dataset"))
        d.pop("num_classes")  # folded into classes
        return json.loads(json.dumps(d))

    def fingerprint(self) -> str:
        """Hash of every option that must not change when resuming a run."""
        d = self.to_dict()
        for key in RESUMABLE_CHANGES:
            d.pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


_ABSENT = object()


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Options that differ (or are missing from one side) and must not change on resume.

    An option absent from the run's stored config counts as changed: a truncated or edited
    ``config.json`` must not let ``lr``, ``loss`` or ``chip_size`` change unnoticed.
    """
    return sorted(
        k
        for k in old.keys() | new.keys()
        if k not in RESUMABLE_CHANGES and old.get(k, _ABSENT) != new.get(k, _ABSENT)
    )


_FLOATS = ("weight_decay", "focal_gamma", "brightness", "contrast", "gamma", "saturation", "noise")


def _check_ranges(cfg: TrainConfig) -> None:
    if cfg.chip_size > MAX_TILE:
        raise ConfigError(
            f"chip_size {cfg.chip_size} is absurd; at most {MAX_TILE} px", option="chip_size"
        )
    if cfg.batch_size > 4096 or cfg.chips_per_epoch > 10**7:
        raise ConfigError(
            f"batch_size {cfg.batch_size} / chips_per_epoch {cfg.chips_per_epoch} are absurd; "
            "keep batch_size <= 4096 and chips_per_epoch <= 10000000"
        )
    if not 0 <= cfg.grid_overlap < cfg.chip_size:
        raise ConfigError(
            f"grid_overlap {cfg.grid_overlap} must be in 0..chip_size-1", option="grid_overlap"
        )
    if cfg.warmup_steps < 0:
        raise ConfigError(f"warmup_steps {cfg.warmup_steps} must be >= 0", option="warmup_steps")
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError(f"seed {cfg.seed} must be in 0..2**63-1", option="seed")
    if cfg.num_threads is not None and not 1 <= cfg.num_threads <= 4096:
        raise ConfigError(f"num_threads {cfg.num_threads} must be at least 1", option="num_threads")
    for name in _FLOATS:
        v = getattr(cfg, name)
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"{name} {v} must be a finite number >= 0", option=name)
    for name in ("loss_weights", "class_weights", "scale_range"):
        v = getattr(cfg, name)
        if isinstance(v, tuple) and not all(math.isfinite(x) and x >= 0 for x in v):
            raise ConfigError(f"{name} {list(v)} must hold finite numbers >= 0", option=name)
    for name in ("hue", "blur"):  # half turns of the colour wheel; a probability
        if not 0 <= getattr(cfg, name) <= 1:
            raise ConfigError(f"{name} {getattr(cfg, name)} must be in 0..1", option=name)
    if cfg.saturation > 1:
        raise ConfigError(f"saturation {cfg.saturation} must be in 0..1", option="saturation")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in cfg.class_map.items()):
        raise ConfigError(f"class_map {cfg.class_map!r} must map old class names to new ones")


def _loss(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split("+")
    if not isinstance(value, list | tuple):
        raise TypeError(f"{value!r} is not a loss name list")
    return tuple(str(v).strip().lower() for v in value)


def _sources(value: Any) -> tuple[SourceSpec, ...]:
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"data sources {value!r} are not a list of 'folder:PATH' or mappings")
    return tuple(SourceSpec.from_any(s) for s in value)


# text forms of training options; every other value goes through geoseg.config.coerce
PARSERS = {"train": _sources, "val": _sources, "loss": _loss}


def build_train_config(*layers: dict[str, Any] | None) -> TrainConfig:
    """Merge option layers (later wins; ``None`` values ignored) into a checked config.

    Parameters
    ----------
    *layers : dict
        E.g. the YAML file's mapping, then the command-line overrides.

    Returns
    -------
    TrainConfig
    """
    from geoseg.config import make_config, merge_layers

    for layer in layers:
        bad = [k for k in (layer or {}) if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"training option name {bad[0]!r} is not a name; fix the config")
    merged = merge_layers((*TRAIN_KEYS, *DATASET_KEYS), layers, "training option")
    dataset = DatasetConfig.from_mapping({k: merged.pop(k) for k in DATASET_KEYS if k in merged})
    return make_config(TrainConfig, {**merged, "dataset": dataset}, PARSERS, "training option")


TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "dataset")
