"""Chip augmentations: dihedral flips/rotations, rescaling, brightness/contrast (pure, seeded).

Photometric changes act on normalized images (units of the band's standard deviation), so they
mean the same for 8-bit RGB and 16-bit multispectral data; ``per_band`` draws them per band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentSpec:
    """Which augmentations to apply and how strongly."""

    flip: bool = True
    rot90: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    per_band: bool = False


def dihedral(
    image: np.ndarray, mask: np.ndarray, k: int, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate (C, H, W) image and (H, W) mask by ``k`` quarter turns, then flip left-right."""
    image = np.rot90(image, k, axes=(-2, -1))
    mask = np.rot90(mask, k, axes=(-2, -1))
    if flip:
        image, mask = image[..., ::-1], mask[..., ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def photometric(
    image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float, per_band: bool
) -> np.ndarray:
    """``image * c + b`` with ``c ~ U(1 - contrast, 1 + contrast)``, ``b ~ U(-brightness, +)``."""
    n = image.shape[0] if per_band else 1
    c = rng.uniform(1 - contrast, 1 + contrast, n).astype(np.float32).reshape(-1, 1, 1)
    b = rng.uniform(-brightness, brightness, n).astype(np.float32).reshape(-1, 1, 1)
    return image * c + b


def augment(
    image: np.ndarray, mask: np.ndarray, spec: AugmentSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``spec`` to one normalized chip and its mask."""
    k = int(rng.integers(4)) if spec.rot90 else 0
    flip = bool(rng.integers(2)) if spec.flip else False
    image, mask = dihedral(image, mask, k, flip)
    if spec.brightness > 0 or spec.contrast > 0:
        image = photometric(image, rng, spec.brightness, spec.contrast, spec.per_band)
    return image.astype(np.float32, copy=False), mask


def resize_chip(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a square chip to ``size`` (bilinear image, nearest-neighbour mask)."""
    if image.shape[-1] == size:
        return image, mask
    import torch
    import torch.nn.functional as F

    img = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(image))[None],
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    )[0].numpy()
    m = (
        F.interpolate(
            torch.from_numpy(np.ascontiguousarray(mask))[None, None].float(),
            size=(size, size),
            mode="nearest",
        )[0, 0]
        .numpy()
        .astype(mask.dtype)
    )
    return img, m
