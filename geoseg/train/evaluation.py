"""Scoring predictions for training validation and experiments, through geoseg.core.metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Score:
    """Dataset-level (macro) mIoU and per-class IoU (NaN for classes absent from both)."""

    miou: float
    iou: list[float]
    class_names: list[str]


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255):
    """Confusion matrix (rows = target, columns = prediction) via the evaluation engine."""
    from geoseg.core import metrics

    return metrics.confusion_matrix(pred, target, num_classes, ignore_index=ignore_index)


def score(cm: np.ndarray, class_names: list[str]) -> Score:
    """Summarize an accumulated confusion matrix with the evaluation engine."""
    from geoseg.core import metrics

    res = metrics.summarize(cm, class_names)
    return Score(float(res.miou), [float(v) for v in res.iou], list(class_names))


def predict_classes(model, meta, image: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Whole-image class map of ``image`` (bands, H, W) raw, through the inference engine.

    The model is put in eval mode (the engine's contract); callers training it switch it back.
    """
    from geoseg.model.engine import Engine

    engine = Engine(model, meta, device=device, precision="fp32")
    return engine.predict_proba(image[None])[0].argmax(0)


def evaluate_samples(
    model, meta, samples, device: str = "cpu", ignore_index: int = 255, progress=None
) -> Score:
    """Score ``model`` (mIoU) over labelled samples (whole-image forward passes).

    ``progress(done, total)`` is called after each sample.
    """
    cm = np.zeros((meta.classes, meta.classes), np.int64)
    for i, s in enumerate(samples):
        pred = predict_classes(model, meta, s.image, device)
        cm += confusion(pred, s.mask, meta.classes, ignore_index)
        if progress is not None:
            progress(i + 1, len(samples))
    return score(cm, meta.class_names)
