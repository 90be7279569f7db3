"""Labelled-dataset readers: ADE20K, Cityscapes, image/mask folders and raster pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoseg.data.base import IGNORE_INDEX, ClassSet, LabelledDataset, Pair
from geoseg.errors import DatasetError

KINDS = ("ade20k", "cityscapes", "folder", "rasters")

__all__ = ["IGNORE_INDEX", "KINDS", "ClassSet", "LabelledDataset", "Pair", "open_dataset"]


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``KIND:PATH``; an unknown kind is a one-line :class:`DatasetError`."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in KINDS:
        raise DatasetError(
            f"dataset {spec!r} is not KIND:PATH with KIND one of {', '.join(KINDS)}; "
            "e.g. --dataset cityscapes:/data/cityscapes"
        )
    return kind, path


def open_dataset(
    spec: str, config: dict[str, Any] | str | Path | None = None, split: str | None = None
) -> LabelledDataset:
    """Open a labelled dataset given as ``KIND:PATH``.

    Parameters
    ----------
    spec : str
        ``ade20k:PATH``, ``cityscapes:PATH``, ``folder:PATH`` or ``rasters:LIST_OR_GLOB``.
    config : mapping or path, optional
        Class list and label encoding (required for ``folder``; see ``configs/dubai.yaml``).
    split : str, optional
        ``validation``/``val`` style split name for ADE20K and Cityscapes.
    """
    from geoseg.config import load_yaml

    kind, path = parse_spec(spec)
    if isinstance(config, str | Path):
        config = load_yaml(config)
    if kind == "ade20k":
        from geoseg.data.ade20k import open_ade20k

        return open_ade20k(path, split)
    if kind == "cityscapes":
        from geoseg.data.cityscapes import open_cityscapes

        return open_cityscapes(path, split)
    if kind == "folder":
        from geoseg.data.folder import open_folder

        if not config:
            raise DatasetError(
                "folder: datasets need a config with the classes (e.g. --config configs/dubai.yaml)"
            )
        return open_folder(path, config)
    from geoseg.data.rasters import open_rasters

    return open_rasters(path, config)
