"""Cityscapes (official layout): labelIds mapped to the 19 trainIds, 255 ignore.

``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` pairs with
``gtFine/<split>/<city>/*_gtFine_labelIds.png`` (or ``*_gtFine_labelTrainIds.png``).
Void labelIds (``ignoreInEval``) become 255. As in cityscapesScripts, void ground truth is left
out and a *prediction* of a void id is a miss for the true class (:data:`MISS`).
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

# (name, labelId, trainId, colour) of the official label definitions (cityscapesScripts
# helpers/labels.py); trainId 255 = ignored in evaluation.
LABELS = [
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
]
NUM_CLASSES = 19
# A predicted void id: not a class, so it counts as a miss (false negative) of the true class.
MISS = NUM_CLASSES


def _table(void: int) -> np.ndarray:
    table = np.full(256, void, np.int64)
    for _, label_id, train_id, _ in LABELS:
        table[label_id] = train_id if train_id != 255 else void
    return table


LABEL_TO_TRAIN = _table(IGNORE_INDEX)
PRED_LABEL_TO_TRAIN = _table(MISS)


def train_classes() -> DatasetConfig:
    """The 19 evaluated classes in trainId order."""
    rows = sorted((t, n, c) for n, _, t, c in LABELS if t != 255)
    classes = tuple(ClassSpec(n, c) for _, n, c in rows)
    return DatasetConfig(classes, label_mode="ids", ignore_index=IGNORE_INDEX)


def label_ids_to_train_ids(labels: np.ndarray, prediction: bool = False) -> np.ndarray:
    """Map labelIds (0..33; -1 and others are void) to trainIds.

    Ground truth: void -> 255 (ignored). Predictions: void -> :data:`MISS`.
    """
    table = PRED_LABEL_TO_TRAIN if prediction else LABEL_TO_TRAIN
    lab = np.asarray(labels).astype(np.int64)
    out = np.full(lab.shape, table[0] if not prediction else MISS, np.int64)
    inside = (lab >= 0) & (lab < 256)
    out[inside] = table[lab[inside]]
    return out


def open_cityscapes(path: str | Path, split: str | None = None) -> LabelledDataset:
    """Open a Cityscapes split (default ``val``); labelIds preferred, else labelTrainIds."""
    root = Path(path)
    split = split or "val"
    img_root, gt_root = root / "leftImg8bit" / split, root / "gtFine" / split
    if not img_root.is_dir() or not gt_root.is_dir():
        raise DatasetError(
            f"{root} is not a Cityscapes folder with leftImg8bit/{split} and gtFine/{split}"
        )
    images = {
        f"{p.parent.name}/{p.name[: -len('_leftImg8bit.png')]}": p
        for p in img_root.glob("*/*_leftImg8bit.png")
    }
    label_ids = {
        f"{p.parent.name}/{p.name[: -len('_gtFine_labelIds.png')]}": p
        for p in gt_root.glob("*/*_gtFine_labelIds.png")
    }
    train_ids = {
        f"{p.parent.name}/{p.name[: -len('_gtFine_labelTrainIds.png')]}": p
        for p in gt_root.glob("*/*_gtFine_labelTrainIds.png")
    }
    use_label_ids = bool(label_ids)
    masks = label_ids if use_label_ids else train_ids
    pairs = [Pair(k, i, m) for k, i, m in pair_by_stem(images, masks, f"cityscapes:{root}")]

    def decode(p: Path) -> np.ndarray:
        raw = read_label_png(p)
        return label_ids_to_train_ids(raw) if use_label_ids else raw

    return LabelledDataset(pairs, train_classes(), decode, read_image, "cityscapes")
