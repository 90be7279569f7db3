"""Image folder + mask folder pairs, masks as class ids or as RGB colours through a palette.

The dataset config (:class:`~geoseg.data.config.DatasetConfig`: ``configs/dubai.yaml``,
``configs/camvid.yaml``) names the classes, how the masks encode them and the two folder
names. ``PATH`` may be one root holding both folders, or a glob of such roots
(``"Tile [1-6]"``). The one reader of this layout, for ``train`` and ``evaluate``.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from geoseg.data.base import LabelledDataset, Pair, is_selected, pair_by_stem
from geoseg.data.config import DatasetConfig
from geoseg.errors import DatasetError
from geoseg.io.images import IMAGE_EXTS, read_image


def folder_files(folder: Path) -> dict[str, Path]:
    """The images (or masks) of a labelled folder, by file stem."""
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS}


def folder_roots(path: str | Path, images: str, masks: str) -> list[tuple[Path, Path, Path]]:
    """``(root, image folder, mask folder)`` of each folder ``path`` names (a glob allowed).

    The one place both layouts of ``folder:`` data are found, for training and evaluation.
    """
    roots = sorted(Path(p) for p in glob.glob(str(path))) or [Path(path)]
    out = []
    for root in roots:
        img_dir, mask_dir = root / images, root / masks
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise DatasetError(
                f"{root} has no {images}/ and {masks}/ folders; point folder: at a folder "
                "holding both (or set images:/masks: in the config)"
            )
        out.append((root, img_dir, mask_dir))
    return out


def open_folder(
    path: str | Path,
    config: DatasetConfig,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> LabelledDataset:
    """Open the image/mask pairs under ``path`` (a root, or a glob of roots).

    Samples are named ``ROOT/STEM`` (the root folder's name, then the file stem), for one root
    as for many, so ``include``/``exclude`` patterns such as ``"*/image_part_009"`` select the
    same samples in ``train`` and ``evaluate``. The filters apply first; among the selected,
    an image without a mask (or a mask without an image) is a :class:`DatasetError`.
    """
    pairs: list[Pair] = []
    for root, img_dir, mask_dir in folder_roots(path, config.images, config.masks):
        prefix = root.name or root.resolve().name  # "." names the current folder
        images, masks = (
            {f"{prefix}/{stem}": p for stem, p in folder_files(d).items()}
            for d in (img_dir, mask_dir)
        )
        images, masks = (
            {k: p for k, p in d.items() if is_selected(k, include, exclude)}
            for d in (images, masks)
        )
        if images or masks:
            found = pair_by_stem(images, masks, f"folder:{root}")
            pairs += [Pair(key, img, mask) for key, img, mask in found]
    if not pairs:
        raise DatasetError(
            f"folder:{path}: no image/mask pairs"
            + (
                f" match include {list(include)} exclude {list(exclude)}"
                if include or exclude
                else ""
            )
            + "; check the path, the patterns and the images:/masks: folder names"
        )
    return LabelledDataset(pairs, config, config.decoder(), read_image, "folder")
