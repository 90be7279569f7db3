"""Georeferenced image/label GeoTIFF pairs listed in a text file or matched by a glob.

A list file holds one ``image label`` pair per line (whitespace or comma separated, ``#``
comments). A glob (``"scenes/*_image.tif"``) pairs each image with the file whose name has
``_image`` replaced by ``_label``.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from pathlib import Path

from geoseg.core.metrics import MAX_CLASSES
from geoseg.data.base import LabelledDataset, Pair
from geoseg.data.config import DatasetConfig
from geoseg.errors import DatasetError
from geoseg.io.images import read_image


def _pairs(spec: str) -> list[Pair]:
    p = Path(spec)
    if p.is_file() and p.suffix.lower() not in (".tif", ".tiff"):
        out = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            line = line.split("#")[0].strip()
            if not line:
                continue
            parts = [s for s in re.split(r"[,\s]+", line) if s]
            if len(parts) != 2:
                raise DatasetError(f"{p}:{n}: expected 'image label', got {line!r}")
            img, lab = (Path(s) if Path(s).is_absolute() else p.parent / s for s in parts)
            out.append(Pair(img.stem, img, lab))
        return out
    out = []
    for img in sorted(Path(s) for s in glob.glob(spec)):
        lab = img.with_name(img.name.replace("_image", "_label"))
        if lab == img or not lab.exists():
            raise DatasetError(f"{img} has no label file {lab.name}; name labels *_label.tif")
        out.append(Pair(img.stem, img, lab))
    return out


def open_rasters(spec: str, config: DatasetConfig | None = None) -> LabelledDataset:
    """Open raster pairs; class ids are read as they are (``ignore_ids`` become ignore)."""
    pairs = _pairs(spec)
    if not pairs:
        raise DatasetError(f"rasters:{spec} matched no image/label pairs")
    for pr in pairs:
        for f in (pr.image, pr.mask):
            if not f.exists():
                raise DatasetError(f"{f} does not exist (listed in rasters:{spec})")
    if config is None or not config.classes:
        raise DatasetError(
            f"rasters:{spec} needs the classes: give a config with classes, or num_classes "
            f"between 1 and {MAX_CLASSES}"
        )
    return LabelledDataset(
        pairs,
        config,
        dataclasses.replace(config, label_mode="ids").decoder(),
        read_image,
        "rasters",
    )
