"""Checked training configuration: YAML (``configs/train_*.yaml``) plus CLI overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from geoseg.errors import ConfigError

SourceKind = Literal["folder", "raster", "vector", "ade20k", "cityscapes"]
LOSS_NAMES = ("ce", "dice", "focal", "lovasz")
# options that may differ between a run and its resumption (a changed ``epochs`` re-plans the
# learning-rate schedule over the new total, so the result then differs from an uninterrupted
# run of either length)
RESUMABLE_CHANGES = ("epochs", "device", "precision", "num_threads")


@dataclass(frozen=True)
class ClassSpec:
    """One class: its name, display colour and (for RGB masks) the label colour(s)."""

    name: str
    colour: tuple[int, int, int]


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
        if kw["kind"] not in SourceKind.__args__:
            raise ConfigError(
                f"data-source kind {kw['kind']!r} is not valid; expected one of "
                f"{', '.join(SourceKind.__args__)}"
            )
        for key in ("include", "exclude"):
            v = kw.get(key, ())
            kw[key] = (v,) if isinstance(v, str) else tuple(v)
        return cls(**kw)


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``geoseg train`` / ``geoseg finetune`` (see ``configs/train_dubai.yaml``)."""

    # data
    train: tuple[SourceSpec, ...] = ()
    val: tuple[SourceSpec, ...] = ()
    classes: tuple[ClassSpec, ...] = ()
    ignore_colours: tuple[tuple[int, int, int], ...] = ()
    label_mode: Literal["rgb", "ids"] = "rgb"
    ignore_index: int = 255
    align: bool = False
    # model
    arch: str = "unet"
    encoder: str = "resnet18"
    model_options: dict[str, Any] = field(default_factory=dict)
    # chips
    chip_size: int = 256
    sampling: Literal["random", "grid"] = "random"
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
    # loss and optimisation
    loss: tuple[str, ...] = ("ce",)
    loss_weights: tuple[float, ...] | None = None
    class_weights: Literal["none", "auto"] | tuple[float, ...] = "none"
    focal_gamma: float = 2.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int = 0
    epochs: int = 10
    batch_size: int = 8
    freeze_encoder: bool = False
    class_map: dict[str, str] = field(default_factory=dict)
    # run
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("chip_size", "chips_per_epoch", "epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be positive")
        if self.lr <= 0:
            raise ConfigError(f"lr {self.lr} must be positive; e.g. 1e-3 (1e-4 to fine-tune)")
        bad = [n for n in self.loss if n not in LOSS_NAMES]
        if bad or not self.loss:
            raise ConfigError(
                f"loss {'+'.join(self.loss)!r} is not valid; combine {', '.join(LOSS_NAMES)} "
                "with '+', e.g. 'ce+dice'"
            )
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss):
            raise ConfigError(
                f"{len(self.loss_weights)} loss_weights for {len(self.loss)} losses; give one each"
            )
        if isinstance(self.class_weights, tuple) and self.classes:
            if len(self.class_weights) != len(self.classes):
                raise ConfigError(
                    f"{len(self.class_weights)} class_weights for {len(self.classes)} classes; "
                    "give one per class or 'auto'"
                )
        if self.scale_range is not None:
            lo, hi = self.scale_range
            if not 0 < lo <= hi:
                raise ConfigError(f"scale_range {self.scale_range} must be 0 < low <= high")

    @property
    def class_names(self) -> list[str]:
        """The class names in id order."""
        return [c.name for c in self.classes]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON/YAML-serializable dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> str:
        """Hash of every option that must not change when resuming a run."""
        d = self.to_dict()
        for key in RESUMABLE_CHANGES:
            d.pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Options (present in both) that differ and must not change when resuming a run."""
    return sorted(
        k for k in old.keys() & new.keys() if k not in RESUMABLE_CHANGES and old[k] != new[k]
    )


def _as_colour(value: Any, what: str) -> tuple[int, int, int]:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))
    if isinstance(value, list | tuple) and len(value) == 3:
        return tuple(int(v) for v in value)
    raise ConfigError(f"{what} colour {value!r} is not valid; use '#RRGGBB' or [r, g, b]")


def _classes(value: Any) -> tuple[ClassSpec, ...]:
    out = []
    for i, c in enumerate(value or ()):
        if isinstance(c, str):
            from geoseg.checkpoint import default_colours

            out.append(ClassSpec(c, default_colours(len(value))[i]))
        elif isinstance(c, dict) and "name" in c:
            out.append(ClassSpec(str(c["name"]), _as_colour(c.get("colour"), c["name"])))
        else:
            raise ConfigError(f"class {c!r} is not valid; expected a name or {{name, colour}}")
    return tuple(out)


def _loss(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split("+")
    return tuple(str(v).strip().lower() for v in value)


CONVERTERS = {
    "train": lambda v: tuple(SourceSpec.from_any(s) for s in ([v] if isinstance(v, str) else v)),
    "val": lambda v: tuple(SourceSpec.from_any(s) for s in ([v] if isinstance(v, str) else v)),
    "classes": _classes,
    "ignore_colours": lambda v: tuple(_as_colour(c, "ignore") for c in v),
    "loss": _loss,
    "loss_weights": lambda v: tuple(float(x) for x in v),
    "class_weights": lambda v: v if isinstance(v, str) else tuple(float(x) for x in v),
    "scale_range": lambda v: tuple(float(x) for x in v),
    "lr": float,
    "weight_decay": float,
    "brightness": float,
    "contrast": float,
    "focal_gamma": float,
}


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
    from geoseg.config import merge_layers

    merged = merge_layers(TrainConfig, layers, "training option")
    try:
        for key, conv in CONVERTERS.items():
            if key in merged:
                merged[key] = conv(merged[key])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value in training config: {exc}") from None
    return TrainConfig(**merged)
