"""Chip augmentations: dihedral flips/rotations, rescaling, photometric changes (pure, seeded).

A new region looks different (sensor, season, haze, processing), so the demo recipe trains on
chips whose look varies more than the training tiles do. Colour changes (gamma, saturation,
hue) act on scaled values (``raw / scale``, about 0..1) before normalization, as a different
camera would; brightness/contrast, blur and noise act on normalized images (units of the
band's standard deviation), so they mean the same for 8-bit RGB and 16-bit multispectral
data. ``per_band`` draws brightness/contrast per band.
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
    gamma: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    blur: float = 0.0
    noise: float = 0.0

    @property
    def colour(self) -> bool:
        """Whether any change in scaled units (gamma, saturation, hue) is asked for."""
        return self.gamma > 0 or self.saturation > 0 or self.hue > 0


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


def colour(image: np.ndarray, rng: np.random.Generator, spec: AugmentSpec) -> np.ndarray:
    """Gamma, saturation and hue changes of a scaled ``(C, H, W)`` chip (values about 0..1).

    ``gamma``: ``x ** exp(U(-gamma, gamma))``; ``saturation``: each pixel moves from its band
    mean by ``U(1 - s, 1 + s)`` (two or more bands); ``hue``: the first three bands rotate
    about the grey axis by ``U(-hue, hue)`` half turns (RGB colour wheel).
    """
    out = np.asarray(image, np.float32)
    if spec.gamma > 0:
        g = np.float32(np.exp(rng.uniform(-spec.gamma, spec.gamma)))
        out = np.sign(out) * np.abs(out) ** g
    if spec.saturation > 0 and out.shape[0] > 1:
        grey = out.mean(axis=0, keepdims=True)
        out = grey + np.float32(rng.uniform(1 - spec.saturation, 1 + spec.saturation)) * (
            out - grey
        )
    if spec.hue > 0 and out.shape[0] >= 3:
        rot = hue_rotation(float(rng.uniform(-spec.hue, spec.hue)) * np.pi)
        rgb = np.tensordot(rot, out[:3], axes=1)
        out = np.concatenate([rgb, out[3:]]) if out.shape[0] > 3 else rgb
    return out.astype(np.float32, copy=False)


def hue_rotation(angle: float) -> np.ndarray:
    """The 3x3 matrix rotating RGB colours by ``angle`` radians about the grey axis."""
    c, s = np.cos(angle), np.sin(angle)
    k = np.full((3, 3), (1 - c) / 3)
    k += np.eye(3) * c
    r = s / np.sqrt(3)
    k += np.array([[0, -r, r], [r, 0, -r], [-r, r, 0]])
    return k.astype(np.float32)


def blur_and_noise(image: np.ndarray, rng: np.random.Generator, spec: AugmentSpec) -> np.ndarray:
    """Gaussian blur (probability ``blur``, sigma 0.5-1.5 px) and noise (std ``U(0, noise)``)."""
    out = image
    if spec.blur > 0 and rng.random() < spec.blur:
        out = gaussian_blur(out, float(rng.uniform(0.5, 1.5)))
    if spec.noise > 0:
        std = np.float32(rng.uniform(0, spec.noise))
        out = out + std * rng.standard_normal(out.shape, dtype=np.float32)
    return out


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of each band of ``(C, H, W)`` (edges reflected)."""
    radius = max(1, int(round(2 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.pad(image, ((0, 0), (radius, radius), (radius, radius)), mode="reflect")
    h, w = image.shape[-2:]
    out = sum(kernel[i] * out[:, i : i + h, :] for i in range(kernel.size))
    out = sum(kernel[i] * out[:, :, i : i + w] for i in range(kernel.size))
    return out.astype(np.float32, copy=False)


def augment(
    image: np.ndarray, mask: np.ndarray, spec: AugmentSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``spec``'s geometric and normalized-unit changes to one chip and its mask."""
    k = int(rng.integers(4)) if spec.rot90 else 0
    flip = bool(rng.integers(2)) if spec.flip else False
    image, mask = dihedral(image, mask, k, flip)
    if spec.brightness > 0 or spec.contrast > 0:
        image = photometric(image, rng, spec.brightness, spec.contrast, spec.per_band)
    image = blur_and_noise(image, rng, spec)
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
