"""Image folder + mask folder pairs, masks as class ids or as RGB colours through a palette.

The YAML config (``configs/dubai.yaml``, ``configs/camvid.yaml``) names the classes and how the
masks encode them::

    label_mode: rgb            # rgb (colours) or ids (single-band class ids)
    images: images             # sub-folder names under each root (default images / masks)
    masks: masks
    classes:
      - {name: Building, colour: "#3C1098"}
    ignore_colours: ["#9B9B9B", "#000000"]   # rgb mode: these colours are ignored
    ignore_ids: [11]                         # ids mode: these ids are ignored
    ignore_index: 255

``PATH`` may be one root holding both folders, or a glob of such roots (``"Tile [1-6]"``).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.core.labels import parse_colour
from geoseg.data.base import ClassSet, LabelledDataset, Pair, pair_by_stem
from geoseg.errors import ConfigError, DatasetError
from geoseg.io.images import IMAGE_EXTS, read_colour_mask, read_id_mask, read_image


def _int_key(config: dict[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(
            f"{key}: {value!r} in the dataset config is not an integer; e.g. {default}"
        )
    return value


def class_set(config: dict[str, Any]) -> ClassSet:
    """Build the class set from a dataset config mapping."""
    classes = config.get("classes")
    if not classes or not isinstance(classes, list):
        raise ConfigError("the dataset config has no 'classes' list of {name, colour}")
    for i, c in enumerate(classes):
        if not isinstance(c, dict) or "name" not in c or "colour" not in c:
            raise ConfigError(
                f"classes[{i}] of the dataset config is {c!r}; each class needs name and colour, "
                "e.g. {name: Building, colour: '#3C1098'}"
            )
    names = tuple(str(c["name"]) for c in classes)
    colours = tuple(parse_colour(c["colour"]) for c in classes)
    return ClassSet(names, colours, _int_key(config, "ignore_index", 255))


def mask_decoder(config: dict[str, Any], classes: ClassSet):
    """Return ``decode(path) -> (H, W) int64`` for the config's label mode."""
    from geoseg.core.labels import check_ids, rgb_to_ids

    mode = config.get("label_mode", "rgb")
    if mode == "rgb":
        ignore = [parse_colour(c) for c in _list_key(config, "ignore_colours")]

        def decode(path: Path) -> np.ndarray:
            rgb = read_colour_mask(path)
            return rgb_to_ids(rgb, list(classes.colours), ignore, classes.ignore_index, str(path))

        return decode
    if mode == "ids":
        ignore_ids = ignore_ids_of(config)

        def decode(path: Path) -> np.ndarray:
            ids = read_id_mask(path)
            for v in ignore_ids:
                ids[ids == v] = classes.ignore_index
            return check_ids(ids, len(classes), classes.ignore_index, str(path))

        return decode
    raise ConfigError(f"label_mode {mode!r} is unknown; use rgb or ids")


def _list_key(config: dict[str, Any], key: str) -> list:
    value = config.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{key}: {value!r} in the dataset config is not a list; e.g. {key}: []")
    return value


def ignore_ids_of(config: dict[str, Any]) -> list[int]:
    """The config's ``ignore_ids`` (a list of integers), checked."""
    ids = _list_key(config, "ignore_ids")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
        raise ConfigError(f"ignore_ids: {ids!r} in the dataset config must be integers; e.g. [11]")
    return ids


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


def open_folder(path: str | Path, config: dict[str, Any]) -> LabelledDataset:
    """Open image/mask folder pairs described by ``config``."""
    classes = class_set(config)
    img_name, mask_name = config.get("images", "images"), config.get("masks", "masks")
    roots = folder_roots(path, img_name, mask_name)
    pairs: list[Pair] = []
    for root, img_dir, mask_dir in roots:
        prefix = f"{root.name}/" if len(roots) > 1 else ""
        found = pair_by_stem(folder_files(img_dir), folder_files(mask_dir), f"folder:{root}")
        pairs += [Pair(prefix + key, img, mask) for key, img, mask in found]
    return LabelledDataset(pairs, classes, mask_decoder(config, classes), read_image, "folder")
