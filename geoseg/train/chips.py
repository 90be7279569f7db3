"""Chip sampling: where to cut training chips from labelled images (pure, seeded).

A chip is a :class:`ChipRef` ``(sample index, row, col, size)``; ``size`` may differ from the
output chip size when scale augmentation is on (the crop is resized afterwards). Chips at
image edges, and images smaller than a chip, are padded with the ignore label, so padding
never enters the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilers.grid import axis_starts


@dataclass(frozen=True)
class ChipRef:
    """Where a chip is cut: sample ``index``, top-left ``row``/``col`` and crop ``size``."""

    index: int
    row: int
    col: int
    size: int


def grid_chips(shapes: list[tuple[int, int]], size: int, overlap: int = 0) -> list[ChipRef]:
    """Every chip of a regular grid over each image (deterministic)."""
    stride = max(size - overlap, 1)
    return [
        ChipRef(i, r, c, size)
        for i, (h, w) in enumerate(shapes)
        for r in axis_starts(h, size, stride)
        for c in axis_starts(w, size, stride)
    ]


def _crop_sizes(n: int, size: int, rng: np.random.Generator, scale_range) -> np.ndarray:
    if scale_range is None:
        return np.full(n, size, np.int64)
    s = rng.uniform(scale_range[0], scale_range[1], n)
    return np.maximum(np.round(size * s).astype(np.int64), 8)


def _corner(length: int, crop: int, rng: np.random.Generator) -> int:
    return int(rng.integers(0, length - crop + 1)) if length > crop else 0


def random_chips(
    shapes: list[tuple[int, int]],
    size: int,
    n: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] | None = None,
) -> list[ChipRef]:
    """``n`` random chips; images are drawn in proportion to their area."""
    area = np.array([h * w for h, w in shapes], np.float64)
    idx = rng.choice(len(shapes), size=n, p=area / area.sum())
    crops = _crop_sizes(n, size, rng, scale_range)
    out = []
    for i, crop in zip(idx, crops, strict=True):
        h, w = shapes[i]
        out.append(ChipRef(int(i), _corner(h, crop, rng), _corner(w, crop, rng), int(crop)))
    return out


@dataclass
class ClassIndex:
    """Subsampled pixel positions per class and image, for class-balanced sampling."""

    points: dict[int, list[tuple[int, np.ndarray]]]

    @classmethod
    def build(
        cls, masks: list[np.ndarray], num_classes: int, per_image: int = 2000, seed: int = 0
    ) -> ClassIndex:
        """Index up to ``per_image`` random pixels of each class in each mask."""
        rng = np.random.default_rng(seed)
        points: dict[int, list[tuple[int, np.ndarray]]] = {k: [] for k in range(num_classes)}
        for i, m in enumerate(masks):
            flat = m.reshape(-1)
            for k in range(num_classes):
                where = np.flatnonzero(flat == k)
                if where.size:
                    if where.size > per_image:
                        where = rng.choice(where, per_image, replace=False)
                    points[k].append((i, np.sort(where)))
        return cls({k: v for k, v in points.items() if v})


def balanced_chips(
    shapes: list[tuple[int, int]],
    index: ClassIndex,
    size: int,
    n: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] | None = None,
) -> list[ChipRef]:
    """``n`` chips centred on pixels of classes drawn uniformly (rare classes are seen often)."""
    classes = sorted(index.points)
    crops = _crop_sizes(n, size, rng, scale_range)
    out = []
    for crop in crops:
        k = classes[int(rng.integers(len(classes)))]
        entries = index.points[k]
        i, flat = entries[int(rng.integers(len(entries)))]
        h, w = shapes[i]
        r, c = divmod(int(flat[int(rng.integers(len(flat)))]), w)
        row = int(np.clip(r - crop // 2, 0, max(h - crop, 0)))
        col = int(np.clip(c - crop // 2, 0, max(w - crop, 0)))
        out.append(ChipRef(i, row, col, int(crop)))
    return out


def cut(array: np.ndarray, ref: ChipRef, fill) -> np.ndarray:
    """Cut ``ref`` from ``array`` (..., H, W), padding beyond the edge with ``fill``."""
    h, w = array.shape[-2:]
    out = np.full(array.shape[:-2] + (ref.size, ref.size), fill, array.dtype)
    part = array[..., ref.row : ref.row + ref.size, ref.col : ref.col + ref.size]
    out[..., : part.shape[-2], : part.shape[-1]] = part
    return out
