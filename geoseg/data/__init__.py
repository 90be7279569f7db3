"""Labelled-dataset readers: ADE20K, Cityscapes, image/mask folders and raster pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geoseg.data.base import IGNORE_INDEX, LabelledDataset, Pair, Sample
from geoseg.data.config import ClassSpec, DatasetConfig, dataset_config
from geoseg.errors import DatasetError

KINDS = ("ade20k", "cityscapes", "folder", "rasters")

__all__ = [
    "IGNORE_INDEX",
    "KINDS",
    "ClassSpec",
    "DatasetConfig",
    "LabelledDataset",
    "Pair",
    "Sample",
    "dataset_config",
    "open_dataset",
]


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
    spec: str,
    config: DatasetConfig | Mapping[str, Any] | str | Path | None = None,
    split: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> LabelledDataset:
    """Open a labelled dataset given as ``KIND:PATH``: the one entry of train and evaluate.

    Parameters
    ----------
    spec : str
        ``ade20k:PATH``, ``cityscapes:PATH``, ``folder:PATH`` or ``rasters:LIST_OR_GLOB``.
    config : DatasetConfig, mapping or path, optional
        Classes and label encoding (required for ``folder`` and ``rasters``; see
        ``configs/dubai.yaml``).
    split : str, optional
        ``validation``/``val`` style split name for ADE20K and Cityscapes.
    include, exclude : sequence of str
        Glob patterns on sample names (``"*/image_part_009"``).
    """
    kind, path = parse_spec(spec)
    config = dataset_config(config)
    if kind == "folder":
        from geoseg.data.folder import open_folder

        if config is None or not config.classes:
            raise DatasetError(
                "folder: datasets need a config with the classes (e.g. --config configs/dubai.yaml)"
            )
        return open_folder(path, config, include, exclude)
    if kind == "ade20k":
        from geoseg.data.ade20k import open_ade20k

        ds = open_ade20k(path, split)
    elif kind == "cityscapes":
        from geoseg.data.cityscapes import open_cityscapes

        ds = open_cityscapes(path, split)
    else:
        from geoseg.data.rasters import open_rasters

        ds = open_rasters(path, config)
    return ds.select(include, exclude)
