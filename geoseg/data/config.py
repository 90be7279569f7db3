"""The dataset config: which classes a labelled dataset has and how its masks encode them.

One typed config serves ``train``, ``finetune`` and ``evaluate`` alike: ``configs/dubai.yaml``
and ``configs/camvid.yaml`` hold only these keys, and a training config holds them beside its
training options (``configs/train_dubai.yaml``)::

    label_mode: rgb            # rgb (mask colours) or ids (single-band class ids)
    images: images             # folder: sub-folder names under each root
    masks: masks
    classes:                   # names, or {name, colour}; or num_classes: N (class_0..)
      - {name: Building, colour: "#3C1098"}
    ignore_colours: ["#9B9B9B", "#000000"]   # rgb: these colours are ignored
    ignore_ids: [11]                         # ids: these ids are ignored
    ignore_index: 255                        # what ignored pixels become in decoded masks
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geoseg.config import check_fields
from geoseg.data.base import IGNORE_INDEX
from geoseg.errors import ConfigError

LabelMode = Literal["rgb", "ids"]


@dataclass(frozen=True)
class ClassSpec:
    """One class: its name and display colour (in ``rgb`` mode also its mask colour)."""

    name: str
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class DatasetConfig:
    """Classes and label encoding of a labelled dataset (the keys of ``configs/dubai.yaml``).

    ``num_classes`` stands for ``classes: [class_0, ...]`` where the labels carry bare ids; it
    is folded into ``classes`` on construction, so code reads only ``classes``.
    """

    classes: tuple[ClassSpec, ...] = ()
    num_classes: int | None = None
    label_mode: LabelMode = "rgb"
    ignore_colours: tuple[tuple[int, int, int], ...] = ()
    ignore_ids: tuple[int, ...] = ()
    ignore_index: int = IGNORE_INDEX
    images: str = "images"
    masks: str = "masks"

    def __post_init__(self) -> None:
        check_fields(self, "dataset option ")
        if not 0 <= self.ignore_index <= 65535:
            raise ConfigError(
                f"ignore_index {self.ignore_index} must be in 0..65535", option="ignore_index"
            )
        if self.num_classes is not None:
            object.__setattr__(self, "classes", _numbered(self.num_classes, self.classes))
            object.__setattr__(self, "num_classes", None)
        if self.label_mode == "rgb":
            _check_distinct_colours(self.classes)
        for name in ("images", "masks"):
            value = getattr(self, name)
            if not value or Path(value).is_absolute() or ".." in Path(value).parts:
                raise ConfigError(
                    f"{name} {value!r} is not a sub-folder name; e.g. {name}: {name}",
                    option=name,
                )

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        """The class names in id order."""
        return tuple(c.name for c in self.classes)

    @property
    def colours(self) -> tuple[tuple[int, int, int], ...]:
        """The class colours in id order."""
        return tuple(c.colour for c in self.classes)

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], other_keys: Iterable[str] = ()
    ) -> DatasetConfig:
        """Build from a YAML mapping; keys in ``other_keys`` (another command's) are skipped."""
        known = {f.name for f in dataclasses.fields(cls)}
        skip = set(other_keys) - known
        unknown = sorted(str(k) for k in mapping if k not in known and k not in skip)
        if unknown:
            raise ConfigError(
                f"unknown dataset option(s) {unknown}; valid: {', '.join(sorted(known))}"
            )
        from geoseg.config import make_config

        kw = {k: v for k, v in mapping.items() if k in known and v is not None}
        return make_config(cls, kw, PARSERS, "dataset option")

    def decoder(self) -> Callable[[Path], np.ndarray]:
        """``decode(path) -> (H, W) int64`` class ids, ignored pixels ``ignore_index``.

        The one mask decoder of folder datasets, for training and evaluation alike.
        """
        from geoseg.core.labels import check_ids
        from geoseg.io.images import read_colour_mask, read_id_mask

        if self.label_mode == "rgb":
            return lambda path: self.colours_to_ids(read_colour_mask(path), str(path))

        def decode(path: Path) -> np.ndarray:
            ids = self.mark_ignored(read_id_mask(path))
            return check_ids(ids, len(self.classes), self.ignore_index, str(path))

        return decode

    def colours_to_ids(self, rgb: np.ndarray, where: str) -> np.ndarray:
        """``(H, W, 3)`` mask colours as class ids through the palette (ignore colours too)."""
        from geoseg.core.labels import rgb_to_ids

        return rgb_to_ids(
            rgb, list(self.colours), list(self.ignore_colours), self.ignore_index, where
        )

    def mark_ignored(self, ids: np.ndarray) -> np.ndarray:
        """Class ids with every ``ignore_ids`` value replaced by ``ignore_index``."""
        if not self.ignore_ids:
            return ids
        return np.where(np.isin(ids, self.ignore_ids), self.ignore_index, ids)


def dataset_config(
    config: DatasetConfig | Mapping[str, Any] | str | Path | None,
    other_keys: Iterable[str] = (),
) -> DatasetConfig | None:
    """A :class:`DatasetConfig` from a config, a mapping or a YAML file (None stays None)."""
    if config is None or isinstance(config, DatasetConfig):
        return config
    if isinstance(config, str | Path):
        from geoseg.config import load_yaml

        config = load_yaml(config)
    return DatasetConfig.from_mapping(config, other_keys)


def _numbered(n: int, classes: tuple[ClassSpec, ...]) -> tuple[ClassSpec, ...]:
    """``num_classes: N`` as classes ``class_0..class_{N-1}``; it must agree with ``classes``."""
    from geoseg.model.checkpoint import MAX_CLASSES, default_colours

    if not 0 < n <= MAX_CLASSES:
        raise ConfigError(
            f"num_classes {n} is out of range; use 1 to {MAX_CLASSES}", option="num_classes"
        )
    if classes and len(classes) != n:
        raise ConfigError(
            f"num_classes {n} disagrees with the {len(classes)} classes listed; give one of them",
            option="num_classes",
        )
    return classes or tuple(ClassSpec(f"class_{i}", c) for i, c in enumerate(default_colours(n)))


def _check_distinct_colours(classes: tuple[ClassSpec, ...]) -> None:
    """In RGB label mode a colour names one class: a second class of that colour is unlabelable."""
    seen: dict[tuple[int, int, int], str] = {}
    for c in classes:
        colour = tuple(c.colour)
        if colour in seen:
            hexc = "#{:02X}{:02X}{:02X}".format(*colour)
            raise ConfigError(
                f"classes {seen[colour]!r} and {c.name!r} have the same colour {hexc}; with "
                "label_mode rgb no pixel could be labelled as the second: give each class its "
                "own colour"
            )
        seen[colour] = c.name


def _as_colour(value: Any, what: str) -> tuple[int, int, int]:
    from geoseg.core.labels import parse_colour

    return parse_colour(value, f"{what} colour")


def _classes(value: Any) -> tuple[ClassSpec, ...]:
    """``classes``: a list of names or ``{name, colour}`` mappings, each name once."""
    from geoseg.model.checkpoint import MAX_CLASSES, default_colours

    if not isinstance(value, list | tuple):
        raise ConfigError(f"classes {value!r} is not a list of names or {{name, colour}}")
    if len(value) > MAX_CLASSES:
        raise ConfigError(f"{len(value)} classes; at most {MAX_CLASSES} (class maps are uint16)")
    out = []
    for i, c in enumerate(value):
        if isinstance(c, ClassSpec):
            out.append(c)
        elif isinstance(c, str) and c:
            out.append(ClassSpec(c, default_colours(len(value))[i]))
        elif isinstance(c, dict) and set(c) - {"name", "colour"}:
            raise ConfigError(f"class {c!r} has unknown keys; expected name and colour")
        elif isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"]:
            what = f"classes[{i}] {c['name']!r}"
            out.append(ClassSpec(c["name"], _as_colour(c.get("colour"), what)))
        else:
            raise ConfigError(
                f"classes[{i}] {c!r} is not valid; expected a name or {{name, colour}}, "
                "e.g. {name: Building, colour: '#3C1098'}"
            )
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"class name(s) {dup} appear twice; give each class its own name")
    return tuple(out)


def _colours(value: Any) -> tuple[tuple[int, int, int], ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"ignore_colours {value!r} is not a list of colours; e.g. ['#000000']")
    return tuple(_as_colour(c, "ignore") for c in value)


# text forms of dataset options (colours); every other value goes through geoseg.config.coerce
PARSERS: dict[str, Callable[[Any], Any]] = {"classes": _classes, "ignore_colours": _colours}
DATASET_KEYS = tuple(f.name for f in dataclasses.fields(DatasetConfig))
