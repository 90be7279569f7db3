"""Segmentation metrics from a confusion matrix: pure numpy, no I/O.

Conventions (documented in :data:`CONVENTIONS` and returned with every result):

- The confusion matrix ``cm[t, p]`` counts pixels of ground-truth class ``t`` predicted as
  ``p``; ``ignore_index`` ground-truth pixels and pixels outside ``valid`` are left out.
  Matrices of blocks, files and workers add up.
- IoU per class is ``tp / (tp + fp + fn)``. A class absent from both the ground truth and the
  prediction has NaN IoU and is left out of the mean (as mmsegmentation does).
- mIoU is the macro mean over classes (dataset level: the matrix is summed over all images
  first, then IoU is computed, as mmsegmentation and cityscapesScripts do).
- Micro IoU (``sum tp / sum (tp + fp + fn)``) is reported too, labelled as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoseg.core.labels import check_integer_dtype
from geoseg.errors import ConfigError, LabelError

# A K x K int64 confusion matrix is 8 K^2 bytes, and one exists per block in flight: 4096
# classes is 128 MiB each. More is a typo (or a class map of raw values), not a class set.
MAX_CLASSES = 4096

CONVENTIONS = {
    "confusion_matrix": "rows = ground truth, columns = prediction",
    "ignore": "ground-truth pixels equal to ignore_index, and nodata pixels, are excluded",
    "absent_classes": "a class absent from both ground truth and prediction has NaN IoU and "
    "is left out of every mean",
    "miou": "macro mean of per-class IoU over the dataset-level confusion matrix",
    "micro_iou": "sum of true positives / sum of (tp + fp + fn) over all classes",
    "accuracy": "per-class accuracy is recall tp / (tp + fn); pixel accuracy is trace / total",
    "fwiou": "IoU weighted by ground-truth class frequency",
}


def check_num_classes(num_classes: int, what: str = "num_classes") -> int:
    """Refuse a class count outside ``1..MAX_CLASSES`` before a matrix is allocated.

    ``what`` names the count in messages: the option ``num_classes`` (the error's ``option``
    then), or where a count read from a file comes from.
    """
    option = what if what == "num_classes" else None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ConfigError(f"{what} {num_classes!r} is not an integer; e.g. 6", option=option)
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError(
            f"{what} {num_classes} is outside 1..{MAX_CLASSES} (a K x K confusion matrix is "
            "8 K^2 bytes); give the number of classes of the class maps, e.g. 6",
            option=option,
        )
    return int(num_classes)


def _check_labels(values: np.ndarray, num_classes: int, what: str) -> None:
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        vals, counts = np.unique(values[bad], return_counts=True)
        shown = ", ".join(f"{v} ({c} px)" for v, c in list(zip(vals, counts, strict=True))[:8])
        raise LabelError(
            f"{what} values outside the class range 0..{num_classes - 1}: {shown}; "
            "map them to classes or to the ignore index"
        )


def confusion_matrix(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    ignore_index: int | None = 255,
    valid: np.ndarray | None = None,
    pred_nodata: int | None = None,
    miss_value: int | None = None,
) -> np.ndarray:
    """Count (ground truth, prediction) pairs.

    Parameters
    ----------
    pred, target : ndarray
        Integer class maps of the same shape.
    num_classes : int
        Number of classes ``K``.
    ignore_index : int, optional
        Ground-truth value to leave out.
    valid : ndarray, optional
        Bool mask; False pixels are left out (nodata of either raster).
    pred_nodata : int, optional
        Prediction value meaning "no prediction": such pixels are left out.
    miss_value : int, optional
        Prediction value that is no class but counts as a miss of the true class (a predicted
        void id, as cityscapesScripts scores it); counted in an extra last column.

    Returns
    -------
    ndarray
        int64 ``(K, K)`` (``(K, K + 1)`` with ``miss_value``), rows = ground truth,
        columns = prediction.

    Raises
    ------
    LabelError
        If a kept ground-truth or prediction value is outside ``0..K-1``, or either map is not
        of an integer dtype.
    ConfigError
        If ``num_classes`` is outside ``1..MAX_CLASSES``.
    """
    check_num_classes(num_classes, "num_classes")
    t, p = _kept_pixels(np.asarray(pred), np.asarray(target), valid, ignore_index, pred_nodata)
    _check_labels(t, num_classes, "label")
    cols = num_classes
    if miss_value is not None:
        p = np.where(p == miss_value, num_classes, p)
        cols += 1
    _check_labels(p, cols, "prediction")
    return np.bincount(t * cols + p, minlength=num_classes * cols).reshape(num_classes, cols)


def _kept_pixels(
    pred: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray | None,
    ignore_index: int | None,
    pred_nodata: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (label, prediction) pairs to count, as int64: checked, ignored and nodata left out."""
    check_integer_dtype(pred.dtype, "the prediction")
    check_integer_dtype(target.dtype, "the label")
    if pred.shape != target.shape:
        raise LabelError(f"prediction shape {pred.shape} differs from label shape {target.shape}")
    keep = np.ones(target.shape, bool) if valid is None else np.asarray(valid, bool).copy()
    if ignore_index is not None:
        keep &= target != ignore_index
    if pred_nodata is not None:
        keep &= pred != pred_nodata
    return target[keep].astype(np.int64, copy=False), pred[keep].astype(np.int64, copy=False)


def shifted_share(cm: np.ndarray) -> float:
    """Share of scored pixels predicted as their ground-truth class + 1.

    Near 1 for predictions written in an encoding shifted by one (ADE20K's annotation ids
    1..150 where 0..149 are expected), which would otherwise score as a silent mIoU of 0.
    """
    k = cm.shape[0]
    total = cm.sum()
    shifted = sum(cm[i, i + 1] for i in range(min(k, cm.shape[1] - 1)))
    return float(shifted / total) if total else 0.0


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one confusion matrix (see the module docstring for conventions)."""

    confusion: np.ndarray
    class_names: list[str]
    iou: np.ndarray
    accuracy: np.ndarray
    precision: np.ndarray
    dice: np.ndarray
    miou: float
    micro_iou: float
    mean_accuracy: float
    pixel_accuracy: float
    fwiou: float
    mean_dice: float
    conventions: dict[str, str] = field(default_factory=lambda: dict(CONVENTIONS))

    @property
    def pixels(self) -> np.ndarray:
        """Ground-truth pixels per class."""
        return self.confusion.sum(1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict (NaN becomes None)."""

        def clean(v):
            return [None if np.isnan(x) else float(x) for x in v]

        def num(x):
            return None if np.isnan(x) else float(x)

        return {
            "summary": {
                "miou": num(self.miou),
                "micro_iou": num(self.micro_iou),
                "mean_accuracy": num(self.mean_accuracy),
                "pixel_accuracy": num(self.pixel_accuracy),
                "fwiou": num(self.fwiou),
                "mean_dice": num(self.mean_dice),
                "pixels": int(self.confusion.sum()),
            },
            "classes": [
                {
                    "id": i,
                    "name": n,
                    "iou": clean([self.iou[i]])[0],
                    "accuracy": clean([self.accuracy[i]])[0],
                    "precision": clean([self.precision[i]])[0],
                    "dice": clean([self.dice[i]])[0],
                    "pixels": int(self.pixels[i]),
                }
                for i, n in enumerate(self.class_names)
            ],
            "confusion_matrix": self.confusion.tolist(),
            "conventions": dict(self.conventions),
        }


def summarize(cm: np.ndarray, class_names: Sequence[str] | None = None) -> EvalResult:
    """Compute every metric from a (K, K) confusion matrix.

    A (K, K + 1) matrix (see ``miss_value`` of :func:`confusion_matrix`) counts its last
    column as misses: false negatives of the true class, false positives of no class.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise LabelError(f"{len(names)} class names for a {k}-class confusion matrix")
    square = cm[:, :k]
    tp = np.diag(square).astype(np.float64)
    gt = cm.sum(1).astype(np.float64)
    pr = square.sum(0).astype(np.float64)
    union = gt + pr - tp
    iou = _ratio(tp, union)
    acc = _ratio(tp, gt)
    acc[(gt == 0) & (pr > 0)] = np.nan  # recall is undefined without ground truth
    prec = _ratio(tp, pr)
    dice = _ratio(2 * tp, gt + pr)
    total = cm.sum()
    freq = gt / total if total else np.zeros(k)
    present = ~np.isnan(iou)
    return EvalResult(
        confusion=cm,
        class_names=names,
        iou=iou,
        accuracy=acc,
        precision=prec,
        dice=dice,
        miou=_nanmean(iou),
        micro_iou=float(tp.sum() / union.sum()) if union.sum() else float("nan"),
        mean_accuracy=_nanmean(acc),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
        fwiou=float((freq[present] * iou[present]).sum()) if total else float("nan"),
        mean_dice=_nanmean(dice),
    )
