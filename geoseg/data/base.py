"""Labelled datasets: paired image and label files, decoded lazily one sample at a time.

Every labelled image, in training and in evaluation, is a :class:`Sample`: the raw image
``(bands, H, W)`` and an int64 class-id mask ``(H, W)`` with ``ignore_index`` where pixels are
ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.errors import DatasetError

if TYPE_CHECKING:
    from geoseg.data.config import DatasetConfig

IGNORE_INDEX = 255


@dataclass
class Sample:
    """One labelled image: ``image`` (bands, H, W) raw values, ``mask`` (H, W) int64 ids.

    ``valid`` (H, W) marks pixels with image data (None: all); nodata is also ignore in
    ``mask``. The paths say where it was read from (None for an in-memory sample).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    valid: np.ndarray | None = None
    image_path: Path | None = None
    mask_path: Path | None = None


@dataclass(frozen=True)
class Pair:
    """One image file and its label file."""

    name: str
    image: Path
    mask: Path


class LabelledDataset:
    """A list of image/label pairs and the function that decodes a label file.

    Parameters
    ----------
    pairs : sequence of Pair
        The samples, in a fixed order.
    config : DatasetConfig
        The classes the decoded masks refer to, and their ignore index.
    decode_mask : callable
        ``decode_mask(path) -> (H, W) int64`` class ids with ``config.ignore_index``.
    read_image : callable
        ``read_image(path) -> (bands, H, W)`` raw values.
    kind : str
        Layout name, for messages.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        config: DatasetConfig,
        decode_mask: Callable[[Path], np.ndarray],
        read_image: Callable[[Path], np.ndarray],
        kind: str,
    ) -> None:
        self.pairs = list(pairs)
        self.config = config
        self.decode_mask = decode_mask
        self.read_image = read_image
        self.kind = kind

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Sample:
        p = self.pairs[i]
        return Sample(
            p.name, self.read_image(p.image), self.decode_mask(p.mask), None, p.image, p.mask
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def select(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> LabelledDataset:
        """The samples whose names match an ``include`` pattern and no ``exclude`` pattern."""
        pairs = [p for p in self.pairs if is_selected(p.name, include, exclude)]
        return LabelledDataset(pairs, self.config, self.decode_mask, self.read_image, self.kind)


def is_selected(name: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """Whether a sample name passes the glob filters (training sources and evaluate alike).

    As in ``.gitignore``, a pattern with a ``/`` matches the whole name (``"Tile 7/*_009"``,
    ``"*/image_part_009"``) and one without matches its last part (``"image_part_00[3-9]"``).
    """
    if include and not any(name_matches(name, p) for p in include):
        return False
    return not any(name_matches(name, p) for p in exclude)


def name_matches(name: str, pattern: str) -> bool:
    """Whether sample ``name`` matches glob ``pattern`` (see :func:`is_selected`)."""
    import fnmatch

    target = name if "/" in pattern else name.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern)


def pair_by_stem(
    images: dict[str, Path], masks: dict[str, Path], where: str
) -> list[tuple[str, Path, Path]]:
    """Pair files by key; an image without a mask (or the reverse) is a :class:`DatasetError`."""
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images:
        shown = ", ".join(str(images[k].name) for k in lonely_images[:3])
        raise DatasetError(
            f"{where}: {len(lonely_images)} image(s) without an annotation ({shown}); add the "
            "labels or remove the images"
        )
    if lonely_masks:
        shown = ", ".join(str(masks[k].name) for k in lonely_masks[:3])
        raise DatasetError(
            f"{where}: {len(lonely_masks)} annotation(s) without an image ({shown}); add the "
            "images or remove the labels"
        )
    if not images:
        raise DatasetError(f"{where}: no image/annotation pairs found; check the path and layout")
    return [(k, images[k], masks[k]) for k in sorted(images)]
