"""Segmentation losses: cross-entropy with ignore and class weights, Dice, Focal, Lovasz.

Losses combine as a weighted sum (``"ce+dice"``); every term ignores ``ignore_index`` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def make_loss(
    names: Sequence[str],
    weights: Sequence[float] | None = None,
    class_weights: np.ndarray | None = None,
    ignore_index: int = 255,
    focal_gamma: float = 2.0,
):
    """Build a callable ``loss(logits, target) -> scalar tensor``.

    Parameters
    ----------
    names : sequence of str
        Terms among ``ce``, ``dice``, ``focal``, ``lovasz``.
    weights : sequence of float, optional
        One weight per term (default 1 each).
    class_weights : ndarray, optional
        Per-class weights of the cross-entropy term.
    ignore_index : int
        Target value excluded from every term.
    focal_gamma : float
        Focusing parameter of the focal term.
    """
    import torch
    from segmentation_models_pytorch import losses as L

    weights = list(weights) if weights is not None else [1.0] * len(names)
    cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    terms = []
    for name in names:
        if name == "ce":
            terms.append(_CrossEntropy(cw, ignore_index))
        elif name == "dice":
            terms.append(L.DiceLoss("multiclass", ignore_index=ignore_index))
        elif name == "focal":
            terms.append(L.FocalLoss("multiclass", gamma=focal_gamma, ignore_index=ignore_index))
        elif name == "lovasz":
            terms.append(L.LovaszLoss("multiclass", ignore_index=ignore_index))
        else:
            from geoseg.errors import ConfigError

            raise ConfigError(f"unknown loss {name!r}; use ce, dice, focal or lovasz")
    return _Sum(terms, weights)


class _CrossEntropy:
    def __init__(self, class_weights, ignore_index: int) -> None:
        self.class_weights = class_weights
        self.ignore_index = ignore_index

    def __call__(self, logits, target):
        import torch.nn.functional as F

        w = None if self.class_weights is None else self.class_weights.to(logits.device)
        if (target != self.ignore_index).sum() == 0:
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=w, ignore_index=self.ignore_index)


class _Sum:
    def __init__(self, terms, weights) -> None:
        self.terms = terms
        self.weights = weights

    def __call__(self, logits, target):
        total = 0.0
        for term, w in zip(self.terms, self.weights, strict=True):
            total = total + w * term(logits.float(), target)
        return total
