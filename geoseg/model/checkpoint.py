"""Model checkpoints: smp's own ``save_pretrained`` layout plus geoseg metadata.

A checkpoint is a directory::

    model.geoseg/
        config.json        # smp's model config (``smp.from_pretrained`` reads it)
        model.safetensors  # weights; loading never executes pickled code
        geoseg.json        # classes, colours, normalization, tile size, bands

so plain segmentation-models-pytorch can load it with ``smp.from_pretrained(path)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import CheckpointError, OutputError
from geoseg.io import files

FORMAT_VERSION = 1
GEOSEG_FILE = "geoseg.json"
SMP_CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE_FILE = "train_state.pt"
# what a checkpoint folder may hold (``last/`` of a run adds the training state)
CHECKPOINT_FILES = frozenset({GEOSEG_FILE, SMP_CONFIG, WEIGHTS, STATE_FILE, "README.md"})
# Bounds on what a checkpoint (or ``model create``) may ask for, so that a hostile or mistyped
# value is refused before anything is allocated: no imagery has more than 1024 bands, class maps
# are at most uint16 (65535 classes), tiles above 65536 px do not fit any accelerator, and no
# smp option (channel widths, depths, strides) needs an integer above 4096.
MAX_BANDS = 1024
MAX_CLASSES = 65535
MAX_TILE = 65536
MAX_OPTION_INT = 4096
# ... and per-integer bounds do not bound their product (decoder_channels [4096] * 5 builds
# 1.4e9 parameters, 5 GiB): models are first built on torch's meta device (no memory) and
# refused above 1e9 parameters (4 GiB of fp32 weights, before gradients and optimizer state),
# more than the largest stock smp encoder with its decoder (unet with resnext101_32x48d: 0.84e9)
MAX_PARAMETERS = 10**9
# create_model's own arguments; never model options (encoder_weights would download weights)
RESERVED_OPTIONS = ("encoder_name", "encoder_weights", "in_channels", "classes", "kwargs")
# smp options geoseg cannot run: an auxiliary head makes the model return a tuple, and an
# output activation would be applied before geoseg's own softmax
UNSUPPORTED_OPTIONS = ("aux_params", "activation")

DEFAULT_COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


@dataclass(frozen=True)
class ModelMeta:
    """Everything besides the weights that is needed to run a model on a raster.

    Attributes
    ----------
    arch, encoder : str
        smp architecture (e.g. ``"unet"``) and encoder (e.g. ``"resnet18"``).
    in_channels, classes : int
        Input band count and number of output classes.
    class_names : list of str
        One name per class.
    colours : list of (int, int, int)
        One RGB colour per class (palette of the written class map).
    mean, std : list of float
        Per-band normalization applied after scaling: ``(x - mean) / std``.
    scale : float
        Raw values are divided by this first (255 for 8-bit imagery).
    tile_size : int
        Tile size the model was trained on (the default ``--tile``).
    model_options : dict
        Extra keyword arguments given to ``smp.create_model``.
    extra : dict
        Free-form provenance (training command, validation mIoU, ...).
    value_range : list of [float, float], optional
        Per band, the lowest and highest raw value of the training data (before ``scale``), so
        that predict can warn about an input of another range (16-bit values through a model
        trained on 8-bit ones); None for checkpoints written before it was recorded.
    quantiles : list of list of float, optional
        Per band, the training data's distribution after ``scale`` (the quantiles at
        :data:`geoseg.core.histogram.LEVELS`), the reference of histogram matching.
    input_quantiles : list of list of float, optional
        Set by ``geoseg adapt --method hist``: the distribution of the region the model was
        adapted to. Inputs are then mapped from it onto ``quantiles`` before normalization.
    """

    arch: str
    encoder: str
    in_channels: int
    classes: int
    class_names: list[str]
    colours: list[tuple[int, int, int]]
    mean: list[float]
    std: list[float]
    scale: float = 255.0
    tile_size: int = 512
    model_options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    value_range: list[list[float]] | None = None
    quantiles: list[list[float]] | None = None
    input_quantiles: list[list[float]] | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_text("arch", self.arch)
        _check_text("encoder", self.encoder)
        _check_count("in_channels", self.in_channels, MAX_BANDS)
        _check_count("classes", self.classes, MAX_CLASSES)
        _check_count("tile_size", self.tile_size, MAX_TILE)
        if not isinstance(self.class_names, list) or not all(
            isinstance(n, str) and n for n in self.class_names
        ):
            raise CheckpointError(
                f"class_names {self.class_names!r} is not a list of non-empty names"
            )
        if len(self.class_names) != self.classes:
            raise CheckpointError(
                f"{len(self.class_names)} class names for {self.classes} classes; "
                "give one name per class"
            )
        if not isinstance(self.colours, list) or len(self.colours) != self.classes:
            n = len(self.colours) if isinstance(self.colours, list) else self.colours
            raise CheckpointError(f"{n} colours for {self.classes} classes; give one per class")
        for c in self.colours:
            check_colour(c, "colour", CheckpointError)
        _check_stats(self.mean, self.std, self.in_channels)
        if not _is_number(self.scale) or not math.isfinite(self.scale) or self.scale <= 0:
            raise CheckpointError(
                f"scale {self.scale!r} must be a finite number > 0 (255 for 8-bit imagery)"
            )
        for name in ("model_options", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise CheckpointError(
                    f"{name} {getattr(self, name)!r} must be a mapping of name: value"
                )
        check_option_values(self.model_options)
        object.__setattr__(
            self, "value_range", _check_value_range(self.value_range, self.in_channels)
        )
        _check_histograms(self)
        if not _is_int(self.format_version) or self.format_version > FORMAT_VERSION:
            raise CheckpointError(
                f"format_version {self.format_version!r} is not supported (this geoseg reads "
                f"up to {FORMAT_VERSION}); upgrade geoseg"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        d = asdict(self)
        d["colours"] = [list(c) for c in self.colours]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        """Build from :meth:`to_dict` output, ignoring unknown keys from newer versions."""
        if not isinstance(d, dict):
            raise CheckpointError(f"the metadata is a {type(d).__name__}, not a mapping")
        fields = cls.__dataclass_fields__
        required = [k for k, f in fields.items() if f.default is f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise CheckpointError(f"the metadata lacks the field(s) {', '.join(missing)}")
        kw = {k: v for k, v in d.items() if k in fields}
        colours = kw.get("colours")
        if isinstance(colours, list):
            kw["colours"] = [tuple(c) if isinstance(c, list | tuple) else c for c in colours]
        return cls(**kw)

    def check_bands(self, count: int, where: str, fix: str | None = None) -> None:
        """Refuse data whose band count is not the model's input channels: the one such check.

        ``fix`` says what to do instead (default: select bands with ``--bands``).
        """
        n = self.in_channels
        if count != n:
            from geoseg.errors import InputError

            example = ",".join(map(str, range(1, n + 1)))
            fix = fix or f"select {n} bands with --bands (e.g. --bands {example})"
            raise InputError(f"{where} has {count} band(s) but the model expects {n}; {fix}")

    def replace(self, **changes: Any) -> ModelMeta:
        """Return a copy with some fields changed."""
        d = asdict(self)
        d.update(changes)
        return ModelMeta.from_dict(d)


def default_colours(n: int) -> list[tuple[int, int, int]]:
    """Return ``n`` distinct RGB colours (a fixed cycle, then a deterministic spread)."""
    out = list(DEFAULT_COLOURS[:n])
    for i in range(len(out), n):
        out.append(((i * 67) % 256, (i * 151) % 256, (i * 211) % 256))
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise CheckpointError(f"{name} {value!r} must be a non-empty name")


def _check_count(name: str, value: Any, limit: int) -> None:
    if not _is_int(value) or not 1 <= value <= limit:
        raise CheckpointError(f"{name} {value!r} must be an integer in 1..{limit}")


def check_colour(value: Any, what: str, error: type[Exception] = CheckpointError) -> tuple:
    """Return ``value`` as an ``(r, g, b)`` tuple of ints in 0..255; else raise ``error``."""
    if (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(_is_int(v) and 0 <= v <= 255 for v in value)
    ):
        return tuple(value)
    raise error(f"{what} {value!r} is not valid; give 3 integers in 0..255 ([r, g, b])")


def _check_stats(mean: Any, std: Any, bands: int) -> None:
    for name, values in (("mean", mean), ("std", std)):
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise CheckpointError(f"{name} {values!r} is not a list of numbers")
    if len(mean) != bands or len(std) != bands:
        raise CheckpointError(
            f"normalization has {len(mean)} means / {len(std)} stds for {bands} bands; give "
            "one per band"
        )
    if not all(math.isfinite(v) for v in mean):
        raise CheckpointError(f"mean {mean} is not finite; re-compute the band statistics")
    if not all(math.isfinite(v) and v > 0 for v in std):
        raise CheckpointError(
            f"std {std} must be finite and > 0 for every band; re-compute the band statistics"
        )


def _check_value_range(value_range: Any, bands: int) -> list[list[float]] | None:
    """Refuse a recorded value range that is not one finite ``[low, high]`` pair per band."""
    if value_range is None:
        return None
    pairs = value_range if isinstance(value_range, list) else None
    if pairs is None or len(pairs) != bands:
        n = len(pairs) if pairs is not None else repr(value_range)
        raise CheckpointError(
            f"value_range has {n} entries for {bands} bands; give one [low, high] per band"
        )
    for pair in pairs:
        ok = isinstance(pair, list | tuple) and len(pair) == 2 and all(map(_is_number, pair))
        if not ok or not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
            raise CheckpointError(
                f"value_range entry {pair!r} is not a finite [low, high] pair with low <= high"
            )
    return [[float(lo), float(hi)] for lo, hi in pairs]


def _check_histograms(meta: ModelMeta) -> None:
    """Refuse stored quantiles that are not one valid distribution per band."""
    from geoseg.core.histogram import check_quantiles

    for name in ("quantiles", "input_quantiles"):
        value = getattr(meta, name)
        if value is None:
            continue
        try:
            object.__setattr__(meta, name, check_quantiles(value, meta.in_channels, name))
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
    if meta.input_quantiles is not None and meta.quantiles is None:
        raise CheckpointError("input_quantiles without quantiles: nothing to match them onto")


# How far an input's largest value may lie from the training data's before predict warns:
# above 4x (uint16 digital numbers through an 8-bit model reach 10-40x), or below 1/64
# (reflectance in 0..1 through a model trained on 0..255).
RANGE_ABOVE = 4.0
RANGE_BELOW = 1 / 64


def value_range_mismatch(
    meta: ModelMeta, sample: tuple[list[float], list[float]] | None, path: str
) -> str | None:
    """A one-line warning when ``sample``'s maxima are far from the training range, else None.

    Parameters
    ----------
    meta : ModelMeta
        The model, with its recorded ``value_range``.
    sample : (list of float, list of float) or None
        Per-band minima and maxima of the input as the model would see it (after --scale).
    path : str
        The input, to name in the message.
    """
    if meta.value_range is None or sample is None:
        return None
    lows, highs = sample
    pairs = zip(meta.value_range, lows, highs, strict=False)
    for band, ((low, high), lo, hi) in enumerate(pairs, 1):
        if high <= 0:
            continue
        if hi > RANGE_ABOVE * high or hi < RANGE_BELOW * high:
            return (
                f"{path} band {band} holds values {lo:g}..{hi:g} where the model was trained on "
                f"{low:g}..{high:g}, so its classes are likely wrong; map "
                f"the values with --scale/--offset (e.g. --scale {high / max(hi, 1e-12):.3g}) "
                "or check --bands"
            )
    return None


def _ints(value: Any) -> Iterable[int]:
    if _is_int(value):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _ints(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _ints(v)


def check_option_values(options: dict[str, Any]) -> None:
    """Refuse model options that would allocate absurd memory (any integer above 4096)."""
    for key, value in options.items():
        if not isinstance(key, str):
            raise CheckpointError(f"model option name {key!r} is not a string")
        if key in RESERVED_OPTIONS:
            raise CheckpointError(
                f"model option {key!r} is not allowed: geoseg sets it itself (use --bands, "
                "--classes, --encoder)"
            )
        if key in UNSUPPORTED_OPTIONS:
            raise CheckpointError(
                f"model option {key!r} is not supported: geoseg models output raw class scores "
                "(no auxiliary head, no activation); drop the option"
            )
        big = [v for v in _ints(value) if abs(v) > MAX_OPTION_INT]
        if big:
            raise CheckpointError(
                f"model option {key}={value!r} holds {big[0]}; no smp option needs an integer "
                f"above {MAX_OPTION_INT} (larger widths would allocate absurd memory)"
            )


def check_option_names(arch: str, options: dict[str, Any]) -> None:
    """Refuse option names the architecture's constructor does not accept (none pass silently)."""
    import inspect

    import segmentation_models_pytorch as smp

    cls = smp.MODEL_ARCHITECTURES_MAPPING.get(str(arch).lower())
    if cls is None:
        raise CheckpointError(
            f"unknown smp architecture {arch!r}; choose one of "
            f"{', '.join(smp.MODEL_ARCHITECTURES_MAPPING)}"
        )
    params = inspect.signature(cls.__init__).parameters
    skip = ("self", *RESERVED_OPTIONS, *UNSUPPORTED_OPTIONS)
    valid = sorted(k for k in params if k not in skip)
    unknown = sorted(k for k in options if k not in valid)
    if unknown:
        raise CheckpointError(
            f"unknown model option(s) {', '.join(unknown)} for {arch}; valid: {', '.join(valid)}"
        )


def _create(meta: ModelMeta):
    import segmentation_models_pytorch as smp

    return smp.create_model(
        meta.arch,
        encoder_name=meta.encoder,
        encoder_weights=None,
        in_channels=meta.in_channels,
        classes=meta.classes,
        **meta.model_options,
    )


def _check_model_size(meta: ModelMeta) -> None:
    """Refuse a model above :data:`MAX_PARAMETERS`, counted on the meta device (no memory)."""
    import torch

    try:
        with torch.device("meta"):
            probe = _create(meta)
    except Exception:  # noqa: BLE001 - the real build below reports its own error
        return
    n = sum(t.numel() for t in (*probe.parameters(), *probe.buffers()))
    del probe
    if n > MAX_PARAMETERS:
        raise CheckpointError(
            f"{meta.arch}/{meta.encoder} with options {meta.model_options} would have "
            f"{n:,} parameters ({n * 4 / 2**30:.1f} GiB of fp32 weights), more than the "
            f"{MAX_PARAMETERS:,} geoseg builds (no stock smp model needs more); use smaller "
            "model_options such as decoder_channels"
        )


def build_model(meta: ModelMeta):
    """Create the (randomly initialized) smp model described by ``meta``.

    The model is first built on torch's meta device, which allocates nothing, and refused
    above :data:`MAX_PARAMETERS`; only then is it built for real.
    """
    check_option_names(meta.arch, meta.model_options)
    _check_model_size(meta)
    try:
        return _create(meta)
    except KeyError as exc:
        raise CheckpointError(
            f"unknown smp architecture or encoder {meta.arch!r}/{meta.encoder!r}: {_one_line(exc)}"
        ) from None
    except (TypeError, ValueError, AssertionError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(
            f"smp cannot build {meta.arch!r} with encoder {meta.encoder!r} and options "
            f"{meta.model_options}: {_one_line(exc)}"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True for a folder geoseg wrote as a checkpoint: ``geoseg.json`` and only known files."""
    p = Path(path)
    if p.is_symlink() or not p.is_dir() or not (p / GEOSEG_FILE).is_file():
        return False
    entries = list(p.iterdir())
    return all(e.name in CHECKPOINT_FILES and e.is_file() and not e.is_symlink() for e in entries)


def check_checkpoint_target(
    path: str | os.PathLike,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike | None] = (),
    what: str = "checkpoint",
) -> Path:
    """Refuse a checkpoint output before any work: inputs, links, files, foreign folders.

    With ``overwrite`` only an existing geoseg checkpoint (:func:`is_checkpoint`) is replaced.
    """
    target = files.check_target(path, overwrite=overwrite, inputs=inputs, what=what, folder=True)
    if target.exists() and not is_checkpoint(target):
        raise OutputError(
            f"{what} {target} is a folder that is not a geoseg checkpoint; --overwrite only "
            "replaces checkpoints geoseg wrote: choose another path"
        )
    return target


def write_checkpoint_files(model, meta: ModelMeta, folder: Path) -> None:
    """Write ``model`` and ``meta`` into the existing, empty ``folder`` (the umask's modes)."""
    model.save_pretrained(folder)
    readme = folder / "README.md"
    if readme.exists():
        readme.unlink()
    text = json.dumps(meta.to_dict(), indent=2) + "\n"
    (folder / GEOSEG_FILE).write_text(text)
    give_umask_modes(folder)


def give_umask_modes(folder: Path) -> None:
    """Give the files of ``folder`` the umask's mode (safetensors writes 0600)."""
    mode = files.umask_mode()
    for entry in folder.iterdir():
        if entry.is_file() and not entry.is_symlink():
            os.chmod(entry, mode)


def save_checkpoint(
    model, meta: ModelMeta, path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write ``model`` and ``meta`` to the checkpoint directory ``path`` atomically.

    The directory is assembled beside ``path`` in an exclusive temporary folder and installed
    with one rename, so a crash never leaves a half-written checkpoint and nothing else is left
    behind; an existing folder is replaced only when it is a geoseg checkpoint.

    Parameters
    ----------
    model : torch.nn.Module
        An smp model (``save_pretrained`` is used, so plain smp can load it).
    meta : ModelMeta
        geoseg metadata.
    path : path-like
        Destination directory.
    overwrite : bool
        Replace an existing checkpoint.

    Returns
    -------
    Path
        The checkpoint directory.
    """
    path = check_checkpoint_target(path, overwrite)
    tmp = files.temp_dir(path)
    try:
        write_checkpoint_files(model, meta, tmp)
        files.install(tmp, path, is_checkpoint)
    except OSError as exc:
        raise OutputError(
            f"cannot write checkpoint {path} ({exc.strerror or exc}); check free disk space "
            "and permissions"
        ) from None
    finally:
        if tmp.exists():
            files.remove_ours(tmp)
    return path


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """Read only the geoseg metadata of a checkpoint (no torch import)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the --model path")
    if not path.is_dir() or not (path / GEOSEG_FILE).is_file():
        raise CheckpointError(
            f"{path} is not a geoseg checkpoint (a directory with {GEOSEG_FILE}); "
            "create one with `geoseg model create` or `geoseg train`"
        )
    file = path / GEOSEG_FILE
    try:
        d = json.loads(file.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        msg = f"{file} is corrupt ({_one_line(exc)}); re-create the checkpoint"
        raise CheckpointError(msg) from None
    try:
        return ModelMeta.from_dict(d)
    except CheckpointError as exc:
        raise CheckpointError(f"{file} is not valid: {exc}; re-create the checkpoint") from None
    except (TypeError, ValueError) as exc:
        msg = f"{file} is corrupt ({_one_line(exc)}); re-create the checkpoint"
        raise CheckpointError(msg) from None


def load_checkpoint(path: str | os.PathLike):
    """Load a checkpoint without executing pickled code.

    Returns
    -------
    model : torch.nn.Module
        The smp model in eval mode, on the CPU.
    meta : ModelMeta
        Its metadata.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; the checkpoint is incomplete, re-create it")
    try:
        model = build_model(meta)
    except CheckpointError as exc:
        raise CheckpointError(f"{path / GEOSEG_FILE}: {exc}") from None
    _check_weights_header(weights, model, meta)
    try:
        state = load_file(str(weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{weights} is corrupt or does not match {meta.arch}/{meta.encoder} "
            f"({_one_line(exc)}); re-create the checkpoint"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {meta.arch}/{meta.encoder}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors; the checkpoint is corrupt or mislabelled"
        )
    model.eval()
    return model, meta


def _check_weights_header(weights: Path, model, meta: ModelMeta) -> None:
    """Compare the safetensors header (names, shapes) with the model before loading any data.

    Reading the header costs nothing, so a file with other tensors, or with tensors far larger
    than the model's, is refused before its data is read into memory.
    """
    from safetensors import SafetensorError, safe_open

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{weights} is corrupt ({_one_line(exc)}); re-create the checkpoint"
        ) from None
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {meta.arch}/{meta.encoder}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors; the checkpoint is corrupt or mislabelled"
        )
    wrong = [k for k in expected if shapes[k] != expected[k]]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{weights} does not match {meta.arch}/{meta.encoder}: {len(wrong)} tensor(s) of "
            f"another shape (e.g. {k} {list(shapes[k])}, expected {list(expected[k])}); the "
            "checkpoint is corrupt or mislabelled"
        )
