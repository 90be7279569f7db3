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
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import CheckpointError, OutputExistsError

FORMAT_VERSION = 1
GEOSEG_FILE = "geoseg.json"
SMP_CONFIG = "config.json"
WEIGHTS = "model.safetensors"

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
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.class_names) != self.classes:
            raise CheckpointError(
                f"{len(self.class_names)} class names for {self.classes} classes; "
                "give one name per class"
            )
        if len(self.colours) != self.classes:
            raise CheckpointError(
                f"{len(self.colours)} colours for {self.classes} classes; give one per class"
            )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise CheckpointError(
                f"normalization has {len(self.mean)} means / {len(self.std)} stds for "
                f"{self.in_channels} bands; give one per band"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict."""
        d = asdict(self)
        d["colours"] = [list(c) for c in self.colours]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        """Build from :meth:`to_dict` output, ignoring unknown keys from newer versions."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["colours"] = [tuple(int(v) for v in c) for c in kw.get("colours", [])]
        return cls(**kw)

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


def build_model(meta: ModelMeta):
    """Create the (randomly initialized) smp model described by ``meta``."""
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(
            meta.arch,
            encoder_name=meta.encoder,
            encoder_weights=None,
            in_channels=meta.in_channels,
            classes=meta.classes,
            **meta.model_options,
        )
    except KeyError as exc:
        raise CheckpointError(
            f"unknown smp architecture or encoder {meta.arch!r}/{meta.encoder!r}: {exc}"
        ) from None
    except (TypeError, ValueError, AssertionError) as exc:
        raise CheckpointError(
            f"smp cannot build {meta.arch!r} with encoder {meta.encoder!r} and options "
            f"{meta.model_options}: {exc}"
        ) from None


def save_checkpoint(
    model, meta: ModelMeta, path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write ``model`` and ``meta`` to the checkpoint directory ``path`` atomically.

    The directory is assembled beside ``path`` under a temporary name and renamed into place,
    so a crash never leaves a half-written checkpoint.

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
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"checkpoint {path} exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        from geoseg.errors import OutputError

        raise OutputError(f"directory {parent} does not exist; create it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        model.save_pretrained(tmp)
        readme = tmp / "README.md"
        if readme.exists():
            readme.unlink()
        (tmp / GEOSEG_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
    try:
        d = json.loads((path / GEOSEG_FILE).read_text())
        return ModelMeta.from_dict(d)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path / GEOSEG_FILE} is corrupt ({exc}); re-create the checkpoint"
        ) from None


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
    model = build_model(meta)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is corrupt ({exc}); re-create the checkpoint") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {meta.arch}/{meta.encoder}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors; the checkpoint is corrupt or mislabelled"
        )
    model.eval()
    return model, meta
