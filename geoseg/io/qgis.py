"""QGIS style sidecars: a paletted ``.qml`` beside a class map, loaded by QGIS automatically.

QGIS applies ``<stem>.qml`` next to a raster as the layer's default style when it opens the
raster. geoseg writes one per GeoTIFF class map with a paletted renderer whose entries are the
class colours and names, so the legend reads the same in QGIS whichever sidecars were copied.
A custom property (:data:`STYLE_MARKER`) tells geoseg's own styles from a user's, so that
``--overwrite`` never replaces a style someone else wrote.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

STYLE_MARKER = "geoseg/output"
# 65535 classes take about 8 MB of palette entries
MAX_STYLE_BYTES = 16 * 2**20
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

__all__ = ["STYLE_MARKER", "is_geoseg_style", "qml_style", "style_path"]


def style_path(path: str | os.PathLike[str]) -> Path:
    """The QGIS style QGIS loads for the raster ``path``: ``<stem>.qml`` beside it."""
    return Path(os.fspath(path).rstrip("/\\")).with_suffix(".qml")


def qml_style(class_names: Sequence[str], colours: Sequence[tuple[int, int, int]]) -> str:
    """A QGIS style document drawing band 1 paletted, one entry per class id.

    Parameters
    ----------
    class_names : sequence of str
        Label of each class id (characters XML cannot hold become ``?``).
    colours : sequence of (int, int, int)
        RGB colour of each class id.

    Returns
    -------
    str
        The ``.qml`` text; values without an entry (nodata) draw transparent.
    """
    root = ET.Element("qgis", version="3.28.0", styleCategories="AllStyleCategories")
    props = ET.SubElement(ET.SubElement(root, "customproperties"), "Option", type="Map")
    ET.SubElement(props, "Option", name=STYLE_MARKER, type="QString", value="class map style")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="paletted",
        band="1",
        opacity="1",
        alphaBand="-1",
        nodataColor="",
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for value, (name, rgb) in enumerate(zip(class_names, colours, strict=True)):
        r, g, b = (int(c) for c in rgb)
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(value),
            color=f"#{r:02x}{g:02x}{b:02x}",
            alpha="255",
            label=_NOT_XML.sub("?", name),
        )
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    doctype = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
    return doctype + ET.tostring(root, encoding="unicode") + "\n"


def is_geoseg_style(path: str | os.PathLike[str]) -> bool:
    """True for a ``.qml`` geoseg wrote: a regular file, bounded, with :data:`STYLE_MARKER`.

    Entity declarations are refused unread (an XML "billion laughs" would expand in memory).
    """
    p = Path(path)
    try:
        if p.is_symlink() or not p.is_file() or p.stat().st_size > MAX_STYLE_BYTES:
            return False
        text = p.read_bytes().decode("utf-8")
        if "<!ENTITY" in text:
            return False
        root = ET.fromstring(text)
    except (OSError, ValueError, ET.ParseError):
        return False
    return root.tag == "qgis" and any(o.get("name") == STYLE_MARKER for o in root.iter("Option"))
