"""GDAL metadata that rasterio has no API for: category names (PAM sidecars), compression support.

GDAL's GTiff driver keeps band category names in a PAM sidecar (``<file>.aux.xml``,
``<PAMRasterBand><CategoryNames>``); it cannot embed them in the TIFF. geoseg writes that
sidecar itself (so it can be renamed into place atomically with the image) and reads it back
through GDAL's C API (``GDALGetRasterCategoryNames``) on the libgdal bundled with rasterio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

__all__ = ["best_compression", "category_names", "pam_with_categories", "sidecar_path"]


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The PAM sidecar GDAL reads beside ``path`` (``<path>.aux.xml``)."""
    return Path(f"{os.fspath(path)}.aux.xml")


def pam_with_categories(names: list[str], existing: str | None = None, band: int = 1) -> str:
    """Return PAM XML whose ``band`` carries ``names`` as GDAL category names.

    Parameters
    ----------
    names : list of str
        Category name of each class value (index = pixel value).
    existing : str, optional
        PAM XML GDAL already wrote; its other content is kept.
    band : int
        1-based band number.

    Returns
    -------
    str
        The XML document.
    """
    try:
        root = ET.fromstring(existing) if existing else ET.Element("PAMDataset")
    except ET.ParseError as exc:
        raise ValueError(f"not a GDAL PAM document ({exc})") from None
    if root.tag != "PAMDataset":
        raise ValueError(f"not a GDAL PAM document (root <{root.tag}>)")
    node = next(
        (b for b in root.findall("PAMRasterBand") if b.get("band") == str(band)),
        None,
    )
    if node is None:
        node = ET.SubElement(root, "PAMRasterBand", band=str(band))
    for old in node.findall("CategoryNames"):
        node.remove(old)
    cats = ET.SubElement(node, "CategoryNames")
    for name in names:
        ET.SubElement(cats, "Category").text = name
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


@functools.cache
def best_compression() -> str:
    """``"ZSTD"`` when this GDAL's GTiff driver supports it, else ``"DEFLATE"``."""
    import numpy as np
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    profile = dict(driver="GTiff", width=16, height=16, count=1, dtype="uint8", compress="ZSTD")
    with warnings.catch_warnings(), MemoryFile() as mem:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with mem.open(**profile) as dst:
            dst.write(np.zeros((1, 16, 16), np.uint8))
        with mem.open() as src:
            found = src.compression
    return "ZSTD" if found is not None and found.name.upper() == "ZSTD" else "DEFLATE"


def _libgdal_candidates() -> list[str]:
    import rasterio

    pkg = Path(rasterio.__file__).resolve().parent
    found: list[str] = []
    for folder in (pkg.parent / "rasterio.libs", pkg / ".dylibs", pkg.parent / "rasterio.libs"):
        if folder.is_dir():
            found += sorted(str(p) for p in folder.iterdir() if p.name.startswith("libgdal"))
    system = ctypes.util.find_library("gdal")
    return found + ([system] if system else [])


@functools.cache
def _libgdal() -> Any | None:
    """The libgdal rasterio uses (loaded already, so ctypes gets the same instance)."""
    import rasterio  # noqa: F401  (loads and registers GDAL first)

    for candidate in _libgdal_candidates():
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        lib.GDALAllRegister.restype = None
        lib.GDALOpen.restype = ctypes.c_void_p
        lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.GDALGetRasterBand.restype = ctypes.c_void_p
        lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
        lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
        lib.GDALGetMetadata.restype = ctypes.c_void_p
        lib.GDALGetMetadata.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.GDALClose.restype = None
        lib.GDALClose.argtypes = [ctypes.c_void_p]
        lib.GDALAllRegister()
        return lib
    return None


def category_names(path: str | os.PathLike[str], band: int = 1) -> list[str] | None:
    """Category names as GDAL reports them (what ``gdalinfo`` prints under ``Categories``).

    Parameters
    ----------
    path : path-like
        A raster GDAL can open.
    band : int
        1-based band number.

    Returns
    -------
    list of str or None
        The names (empty when the band has none); None when libgdal cannot be located.
    """
    lib = _libgdal()
    if lib is None:
        return None
    handle = lib.GDALOpen(os.fsencode(os.fspath(path)), 0)
    if not handle:
        return None
    try:
        hband = lib.GDALGetRasterBand(handle, band)
        # GTiff loads its PAM sidecar lazily and GetCategoryNames does not trigger it (GDAL
        # 3.10); reading the metadata first does, as gdalinfo does before printing categories.
        lib.GDALGetMetadata(hband, None)
        names = lib.GDALGetRasterCategoryNames(hband)
        out: list[str] = []
        i = 0
        while names and names[i] is not None:
            out.append(names[i].decode("utf-8"))
            i += 1
        return out
    finally:
        lib.GDALClose(handle)
