"""Checked configuration: dataclasses with ``Literal`` choices, loaded from YAML.

Command-line flags override values from a ``--config`` file, which override the defaults.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from geoseg.errors import ConfigError


@dataclass(frozen=True)
class PredictConfig:
    """Options of ``geoseg predict`` (see ``configs/predict.yaml``)."""

    tile: int | None = None
    overlap: int | None = None
    blend: Literal["gaussian", "cosine", "mean", "crop"] = "gaussian"
    block_size: int = 2048
    batch_size: int | None = None
    workers: int | None = None
    scheduler: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    tta: Literal["none", "flip", "d4"] = "none"
    bands: tuple[int, ...] | None = None
    probabilities: bool = False
    cog: bool = False
    prefetch: int = 2

    def __post_init__(self) -> None:
        _check_fields(self)
        for name in ("tile", "block_size", "batch_size", "workers", "prefetch"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {value} must be positive")


def _check_fields(obj: Any) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if not _matches(value, hint):
            raise ConfigError(f"{f.name}: {value!r} is not valid; expected {_describe(hint)}")


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_matches(value, h) for h in get_args(hint))
    if origin is tuple:
        return isinstance(value, tuple) and all(isinstance(v, int) for v in value)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is not None and origin is not tuple:
        return " or ".join(_describe(h) for h in get_args(hint))
    if origin is tuple:
        return "a list of integers"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a one-line :class:`ConfigError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the --config path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return data


def merge_layers(cls: type, layers: tuple, what: str = "option") -> dict[str, Any]:
    """Merge option mappings (later wins; ``None`` values are ignored); refuse unknown keys."""
    known = {f.name for f in dataclasses.fields(cls)}
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            key = key.replace("-", "_")
            if key not in known:
                raise ConfigError(
                    f"unknown {what} {key!r}; valid options: {', '.join(sorted(known))}"
                )
            if value is not None:
                merged[key] = value
    return merged


def build_config(cls: type, *layers: dict[str, Any] | None) -> Any:
    """Merge option layers (later wins; ``None`` values are ignored) into a checked ``cls``."""
    merged = merge_layers(cls, layers)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})
