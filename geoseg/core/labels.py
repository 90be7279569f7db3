"""Label decoding shared by training and evaluation: RGB palettes and class-id checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from geoseg.errors import LabelError


def parse_colour(
    value: Any, what: str = "colour", error: type[Exception] | None = None
) -> tuple[int, int, int]:
    """``"#RRGGBB"`` or ``[r, g, b]`` (each 0..255) -> an RGB tuple: the one colour parser.

    Raises
    ------
    ConfigError
        (or ``error``) Anything else: a malformed hex string, a channel that is no integer or
        is outside 0..255 (it would be clamped or wrapped silently and match no mask colour).
    """
    from geoseg.errors import ConfigError

    error = error or ConfigError
    hint = "write colours as '#RRGGBB' or [r, g, b] with each channel 0..255"
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        try:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            raise error(f"{what} {value!r} is not a hex colour; {hint}") from None
    if isinstance(value, list | tuple) and len(value) == 3:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise error(f"{what} {value!r} has a channel that is no integer; {hint}")
        if not all(0 <= v <= 255 for v in value):
            raise error(f"{what} {value!r} has a channel outside 0..255; {hint}")
        return tuple(value)  # type: ignore[return-value]
    raise error(f"{what} {value!r} is not '#RRGGBB' or [r, g, b]; {hint}")


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack an (..., 3) uint8 array into int32 ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def rgb_to_ids(
    rgb: np.ndarray,
    colours: list[tuple[int, int, int]],
    ignore_colours: list[tuple[int, int, int]] = (),
    ignore_index: int = 255,
    where: str = "mask",
) -> np.ndarray:
    """Map an (H, W, 3) colour mask to class ids through a palette.

    Raises
    ------
    LabelError
        If a colour is neither a class colour nor an ignore colour.
    """
    keys = [pack_rgb(np.array(c, np.uint8)) for c in colours]
    keys += [pack_rgb(np.array(c, np.uint8)) for c in ignore_colours]
    values = list(range(len(colours))) + [ignore_index] * len(ignore_colours)
    order = np.argsort(keys)
    sorted_keys = np.asarray(keys)[order]
    sorted_vals = np.asarray(values, np.int64)[order]
    packed = pack_rgb(rgb)
    pos = np.clip(np.searchsorted(sorted_keys, packed), 0, len(sorted_keys) - 1)
    unknown = sorted_keys[pos] != packed
    if unknown.any():
        v = int(packed[unknown][0])
        colour = f"#{v:06X}"
        raise LabelError(
            f"{where}: colour {colour} ({int(unknown.sum())} pixels) is not in the palette; "
            "add it to classes or ignore_colours in the config"
        )
    return sorted_vals[pos]


def check_ids(mask: np.ndarray, num_classes: int, ignore_index: int, where: str) -> np.ndarray:
    """Check that ``mask`` holds only ids ``0..num_classes-1`` or ``ignore_index``."""
    mask = mask.astype(np.int64)
    bad = (mask >= num_classes) & (mask != ignore_index) | (mask < 0) & (mask != ignore_index)
    if bad.any():
        raise LabelError(
            f"{where}: label id {int(mask[bad][0])} is outside the class set 0..{num_classes - 1}"
            f" (ignore {ignore_index}); fix the labels or the classes in the config"
        )
    return mask


def check_integer_dtype(dtype: Any, where: str, max_bits: int | None = None) -> np.dtype:
    """Refuse a class-id array or raster whose dtype is not an integer type.

    Float values would be truncated (2.9 scored as class 2) and complex ones cast with a
    warning, so both are refused rather than silently scored.

    Parameters
    ----------
    dtype : dtype-like
        A numpy dtype or a rasterio dtype name (``"float32"``).
    where : str
        The file or array, for the message.
    max_bits : int, optional
        Also refuse integer types wider than this (class maps are at most 16-bit).

    Returns
    -------
    numpy.dtype
        The checked dtype.

    Raises
    ------
    LabelError
        A float or complex dtype, or an integer one wider than ``max_bits``.
    """
    dt = np.dtype(dtype)
    fix = "Byte" if max_bits is None or max_bits <= 8 else "UInt16"
    if dt.kind not in "iub":
        raise LabelError(
            f"{where} holds {dt.name} values; class ids must be integers: convert it with "
            f"gdal_translate -ot {fix} (after rounding the values)"
        )
    if max_bits is not None and dt.itemsize * 8 > max_bits:
        raise LabelError(
            f"{where} is {dt.name}; class maps are at most {max_bits}-bit: convert it with "
            f"gdal_translate -ot {fix}"
        )
    return dt


CLASS_NAME_TAGS = ("CLASS_NAMES", "class_names", "classes")


def class_names_from_tags(tags: dict[str, str]) -> list[str] | None:
    """Class names a class map carries in its tags (geoseg writes ``CLASS_NAMES`` as JSON).

    The one parser of them, for every reader (evaluate, quicklook): a JSON list, else a
    comma-separated list; None when no tag holds any.
    """
    import json

    for key in CLASS_NAME_TAGS:
        raw = tags.get(key)
        if not raw:
            continue
        try:
            names = json.loads(raw)
        except json.JSONDecodeError:
            names = [n.strip() for n in raw.split(",")]
        if isinstance(names, list) and names:
            return [str(n) for n in names]
    return None
