"""Checked configuration: dataclasses with ``Literal`` choices, loaded from YAML.

Command-line flags override values from a ``--config`` file, which override the defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from geoseg.core.blend import BlendMode
from geoseg.core.confidence import Uncertainty
from geoseg.errors import ConfigError, InputError
from geoseg.model.engine import TTA, Device, Precision


@dataclass(frozen=True)
class PredictConfig:
    """Options of ``geoseg predict`` (see ``configs/predict.yaml``)."""

    tile: int | None = None
    overlap: int | None = None
    blend: BlendMode = "gaussian"
    block_size: int = 2048
    batch_size: int | None = None
    workers: int | None = None
    scheduler: str | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    tta: TTA = "none"
    compile: bool = False
    bands: tuple[int, ...] | None = None
    assets: tuple[str, ...] | None = None
    scale: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None
    probabilities: bool = False
    cog: bool = False
    confidence: bool = False
    uncertainty: Uncertainty | None = None
    nodata: int | None = None
    creation_options: dict[str, Any] | None = None
    prefetch: int = 1
    dashboard: str | None = None
    rasters_in_flight: int = 2

    def __post_init__(self) -> None:
        for name in ("scale", "offset"):  # one number (YAML `scale: 0.0001`) is one for all
            value = getattr(self, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                object.__setattr__(self, name, (value,))
        check_fields(self)
        check_scaling(self.scale, self.offset, self.assets)
        positive = ("tile", "block_size", "batch_size", "workers", "prefetch")
        for name in (*positive, "rasters_in_flight"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} {value} must be positive", option=name)
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ConfigError(
                    f"{name} {_short(value)} is out of range; use {low} to {high}", option=name
                )
        if self.bands is not None:
            check_bands(self.bands)
        if self.scheduler is not None:
            check_scheduler_address(self.scheduler)
        if self.dashboard is not None:
            dashboard_address(self.dashboard)
        if self.creation_options is not None:  # normalized, as the resume identity holds them
            from geoseg.io.writers import check_creation_options

            opts = check_creation_options(self.creation_options, self.block_size, self.cog)
            object.__setattr__(self, "creation_options", opts or None)

    @property
    def confidence_measure(self) -> str | None:
        """What ``_confidence.tif`` holds (``--uncertainty``, else the winning probability).

        None when neither ``--confidence`` nor ``--uncertainty`` asks for the file.
        """
        if self.uncertainty is not None:
            return self.uncertainty
        return "probability" if self.confidence else None


# Sane ranges of PredictConfig's integers (a larger value is a typo, or a hostile config: a
# tile of 10**30 pixels would otherwise reach numpy as an allocation). The predict pipeline
# bounds tile and batch further by the raster and memory.
INT_RANGES = {
    "tile": (1, 65536),
    "overlap": (0, 65536),
    "block_size": (1, 65536),
    "batch_size": (1, 4096),
    "prefetch": (1, 64),
    "rasters_in_flight": (1, 64),  # each raster of a batch in flight holds its own tasks
    "nodata": (0, 65535),
}
# GDAL's limit on the bands of a dataset.
MAX_BANDS = 65535


def check_scaling(
    scale: tuple[float, ...] | None,
    offset: tuple[float, ...] | None,
    assets: tuple[str, ...] | None,
) -> None:
    """Refuse empty or non-finite ``scale``/``offset`` values, a zero scale, empty assets."""
    import math

    for name, values in (("scale", scale), ("offset", offset)):
        if values is None:
            continue
        if not values or len(values) > MAX_BANDS:
            raise ConfigError(
                f"{name} needs 1 to {MAX_BANDS} numbers, e.g. {name} 0.0001", option=name
            )
        bad = [v for v in values if not math.isfinite(v) or (name == "scale" and v == 0)]
        if bad:
            raise ConfigError(
                f"{name} {_short(bad[0])} is not usable; give finite numbers"
                + (" other than 0" if name == "scale" else ""),
                option=name,
            )
    if assets is not None and (not assets or not all(a.strip() for a in assets)):
        raise ConfigError(
            "assets names no asset; list asset keys, e.g. red,green,blue", option="assets"
        )


def check_bands(bands: tuple[int, ...]) -> None:
    """Refuse an empty band list, or band numbers below 1 or above :data:`MAX_BANDS`."""
    if not bands:
        raise ConfigError(
            "bands [] selects no band; list 1-based band numbers, e.g. 4,3,2", option="bands"
        )
    for b in bands:
        if isinstance(b, bool) or not 1 <= b <= MAX_BANDS:
            raise ConfigError(
                f"bands {_short(b)} is not a band number; use 1 to {MAX_BANDS}, e.g. 4,3,2",
                option="bands",
            )


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that an error message stays one line."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "a huge int"
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _split_host_port(text: str) -> tuple[str, str]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` split into host and port text (port '' if absent)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else rest
    host, sep, port = text.rpartition(":")
    return (host, port) if sep else (text, "")


def _port(text: str, low: int) -> int | None:
    """The port number ``text`` if it is one in ``low``..65535, else None."""
    if not text.isdigit() or len(text) > 5 or not low <= int(text) <= 65535:
        return None
    return int(text)


# Schemes of dask.distributed's comms that reach another process.
SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


def check_scheduler_address(address: str) -> str:
    """Refuse a scheduler address that is no ``SCHEME://HOST:PORT`` address.

    Returns the address, with ``tcp://`` added when no scheme is given (as Dask does).
    """
    fix = "expected an address like tcp://HOST:8786 (tls://HOST:8786 for TLS)"
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in SCHEDULER_SCHEMES:
        raise ConfigError(
            f"scheduler {_short(address)}: unknown scheme {scheme!r}; {fix}", option="scheduler"
        )
    host, port = _split_host_port(rest)
    if not host or any(c.isspace() or c in "/?#@" for c in host) or _port(port, 1) is None:
        raise ConfigError(
            f"scheduler {_short(address)} is not a scheduler address; {fix}", option="scheduler"
        )
    return f"{scheme}://{rest}"


def dashboard_address(value: str) -> str:
    """The ``HOST:PORT`` the Dask dashboard should listen on, for ``--dashboard VALUE``.

    ``PORT`` alone or ``:PORT`` means loopback (``127.0.0.1:PORT``): the dashboard has no
    authentication, so another interface is used only when it is named explicitly
    (``0.0.0.0:8787``). Port 0 picks a free port.
    """
    host, port = _split_host_port(value.strip())
    if value.strip().isdigit():
        host, port = "", value.strip()
    if _port(port, 0) is None or any(c.isspace() or c in "/?#@[]" for c in host):
        raise ConfigError(
            f"dashboard {_short(value)} is not an address; use HOST:PORT, e.g. "
            "127.0.0.1:8787 (0 as the port picks a free one)",
            option="dashboard",
        )
    host = host or "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_fields(obj: Any, what: str = "") -> None:
    """Refuse dataclass fields whose value does not match the field's type hint.

    One checker for every config dataclass (predict's, training's): ``Literal`` choices,
    unions, ``tuple[X, ...]`` elements, ``dict`` with text keys, and ints that are not bools,
    so a YAML string where a number goes, or a bool for a count, never gets further.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if not _matches(value, hint):
            raise ConfigError(
                f"{what}{f.name}: {_short(value)} is not valid; expected {_describe(hint)}",
                option=f.name,
            )


_UNIONS = (typing.Union, getattr(__import__("types"), "UnionType", None))


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in get_args(hint))
    if origin in _UNIONS:
        return any(_matches(value, h) for h in get_args(hint))
    if origin is tuple:
        args = [a for a in get_args(hint) if a is not Ellipsis]
        if not isinstance(value, tuple):
            return False
        if len(get_args(hint)) == 2 and get_args(hint)[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return all(_matches(v, a) for v, a in zip(value, args, strict=False))  # owners check len
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is Any:
        return True
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
    if origin in _UNIONS:
        return " or ".join(_describe(h) for h in get_args(hint))
    if origin is tuple:
        args = [a for a in get_args(hint) if a is not Ellipsis]
        return "a list" + (f" of {_describe(args[0])}" if args else "")
    if origin is dict:
        return "a mapping"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


# Limits of a config file: options of a few commands fit in a few KiB.
MAX_CONFIG_BYTES = 2**20
MAX_CONFIG_DEPTH = 32


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of option: value from a config file.

    Refused with a one-line :class:`ConfigError` naming the file: a missing file, a folder or
    any other non-regular file (a FIFO would block the read), more than
    :data:`MAX_CONFIG_BYTES`, text that is not UTF-8 (binary, UTF-16), bad YAML, aliases
    (``*name``: a "billion laughs" file expands exponentially), nesting deeper than
    :data:`MAX_CONFIG_DEPTH`, keys that are not text, and a top level that is not a mapping.
    """
    path = Path(path)
    data = parse_yaml(_read_config_text(path), f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} holds a {type(data).__name__}; it must hold a mapping of "
            "option: value"
        )
    return data


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML ``text`` with geoseg's bounded loader (see :func:`load_yaml`).

    Used for config files and for ``KEY=VALUE`` options alike, so a value on the command line
    cannot expand aliases either; errors are one-line :class:`ConfigError`s naming ``where``.
    """
    import yaml

    refused, loader = _yaml_loader()
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 (a SafeLoader subclass)
    except refused as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{at}; fix the syntax") from None
    except (ValueError, OverflowError) as exc:  # e.g. an int of 5000 digits, a 13th month
        raise ConfigError(
            f"{where} holds a value that cannot be read ({_short(str(exc))}); fix it"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply; simplify it") from None


def _read_config_text(path: Path) -> str:
    """The UTF-8 text of config file ``path``, refusing what :func:`load_yaml` lists."""
    import stat

    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (it is then refused below).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist; check the --config path") from None
    except IsADirectoryError:
        raise InputError(f"config file {path} is a directory; pass a YAML file") from None
    except OSError as exc:
        raise InputError(
            f"cannot read config file {path} ({exc.strerror}); check the --config path"
        ) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputError(f"config file {path} is a directory; pass a YAML file")
        raise InputError(
            f"config file {path} is not a regular file (a FIFO, socket or device); pass a YAML file"
        )
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise InputError(f"cannot read config file {path} ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; "
            "a config holds a few options: pass the right file"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}); expected UTF-8 YAML"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"config file {path} holds NUL bytes (binary?); expected UTF-8 YAML")
    return text


@functools.lru_cache(maxsize=1)
def _yaml_loader() -> tuple[type, type]:
    """An error class and PyYAML's SafeLoader without aliases, deep nesting or odd keys."""
    import yaml

    class Refused(yaml.YAMLError):
        """A config construct geoseg refuses (the message names it and its line)."""

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise Refused(
                    f"alias *{event.anchor} at line {event.start_mark.line + 1}: YAML aliases "
                    "are not supported in config files; write the value out"
                )
            self.depth += 1
            try:
                if self.depth > MAX_CONFIG_DEPTH:
                    mark = self.peek_event().start_mark
                    raise Refused(
                        f"nesting deeper than {MAX_CONFIG_DEPTH} levels at line "
                        f"{mark.line + 1}; simplify the config"
                    )
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node, deep=False):
            for key_node, _ in node.value:
                if key_node.tag not in (STR_TAG, MERGE_TAG):
                    raise Refused(
                        f"key {_node_text(key_node)} at line {key_node.start_mark.line + 1} "
                        "is not text; option names are words (quote a key to keep it)"
                    )
            return super().construct_mapping(node, deep)

    return Refused, Loader


STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"


def _node_text(node: Any) -> str:
    """A short rendering of a YAML key node for an error message."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        return _short(node.value or "null", 40)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def merge_layers(
    fields: type | tuple[str, ...], layers: tuple, what: str = "option"
) -> dict[str, Any]:
    """Merge option mappings (later wins; ``None`` values are ignored); refuse unknown keys.

    ``fields`` is the config dataclass, or the option names when several make one config.
    """
    known = (
        set(fields) if isinstance(fields, tuple) else {f.name for f in dataclasses.fields(fields)}
    )
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if not isinstance(key, str):
                raise ConfigError(f"{what} name {_short(key)} is not text; use the option's name")
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
    return make_config(cls, merge_layers(cls, layers))


def make_config(
    cls: type,
    values: dict[str, Any],
    parsers: dict[str, Any] | None = None,
    what: str = "option",
) -> Any:
    """``cls(**values)``, YAML's forms turned into the fields' types: how every config is built.

    Predict's, training's and a dataset's options all go this way. A field with a parser in
    ``parsers`` (text forms such as ``"ce+dice"`` or ``"#3C1098"``) goes through it; every
    other value through :func:`coerce`. The dataclass then checks types
    (:func:`check_fields`) and ranges itself.
    """
    hints = typing.get_type_hints(cls)
    kw = {}
    for key, value in values.items():
        parse = (parsers or {}).get(key)
        try:
            kw[key] = parse(value) if parse else coerce(value, hints.get(key, Any))
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{what} {key}: {_short(value)} is not valid ({_short(str(exc), 120)})", option=key
            ) from None
    return cls(**kw)


def coerce(value: Any, hint: Any) -> Any:
    """``value`` as read from YAML, in the form of type ``hint`` where one exists.

    Lists become tuples (element by element), integers and numeric text (``"1e-3"``, which
    YAML 1.1 reads as text) become floats; anything else is returned as it is, for the
    dataclass's own check to accept or refuse.
    """
    origin = get_origin(hint)
    if origin in _UNIONS:
        for arm in get_args(hint):
            converted = coerce(value, arm)
            if _matches(converted, arm):
                return converted
        return value
    if origin is tuple and isinstance(value, list | tuple):
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0]) for v in value)
        if len(args) == len(value):
            return tuple(coerce(v, a) for v, a in zip(value, args, strict=True))
        return tuple(value)
    if hint is float and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
    return value
