"""ADE20K (ADEChallengeData2016 layout), with the reduce_zero_label convention.

``images/<split>/*.jpg`` pairs with ``annotations/<split>/*.png``; label 0 ("other") is ignored
and labels 1..150 become classes 0..149, as mmsegmentation's ``reduce_zero_label`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoseg.data.base import (
    IGNORE_INDEX,
    LabelledDataset,
    Pair,
    pair_by_stem,
)
from geoseg.data.config import ClassSpec, DatasetConfig
from geoseg.errors import DatasetError
from geoseg.io.images import read_image, read_label_png
from geoseg.model.checkpoint import default_colours

NUM_CLASSES = 150


def reduce_zero_label(labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Map 0 -> ignore and 1..150 -> 0..149 (values outside stay out of range and are caught)."""
    out = labels.astype(np.int64) - 1
    out[labels == 0] = ignore_index
    return out


def class_names(root: Path) -> list[str]:
    """Class names from ``objectInfo150.txt`` (first synonym), or ``class_<i>``."""
    info = root / "objectInfo150.txt"
    if not info.is_file():
        return [f"class_{i}" for i in range(NUM_CLASSES)]
    names = []
    for line in info.read_text().splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 5:
            names.append(parts[4].split(",")[0].strip())
    if len(names) != NUM_CLASSES:
        raise DatasetError(f"{info} lists {len(names)} classes; expected {NUM_CLASSES}")
    return names


def find_root(path: Path) -> Path:
    """Accept the ADEChallengeData2016 folder or its parent."""
    if (path / "images").is_dir():
        return path
    if (path / "ADEChallengeData2016" / "images").is_dir():
        return path / "ADEChallengeData2016"
    raise DatasetError(
        f"{path} is not an ADE20K folder (images/ and annotations/, or ADEChallengeData2016/)"
    )


def open_ade20k(path: str | Path, split: str | None = None) -> LabelledDataset:
    """Open an ADE20K split (default ``validation``)."""
    root = find_root(Path(path))
    split = split or "validation"
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise DatasetError(f"{root} has no images/{split} and annotations/{split}")
    images = {p.stem: p for p in img_dir.glob("*.jpg")}
    masks = {p.stem: p for p in ann_dir.glob("*.png")}
    pairs = [Pair(k, i, m) for k, i, m in pair_by_stem(images, masks, f"ade20k:{root}")]
    names = class_names(root)
    classes = tuple(map(ClassSpec, names, default_colours(NUM_CLASSES)))
    config = DatasetConfig(classes, label_mode="ids", ignore_index=IGNORE_INDEX)
    return LabelledDataset(
        pairs, config, lambda p: reduce_zero_label(read_label_png(p)), read_image, "ade20k"
    )
