"""GDAL's own view of a raster through its C API: a test oracle independent of geoseg's writers."""

from __future__ import annotations

import ctypes
import os

from geoseg.io.gdal import libgdal


def category_names(path: str | os.PathLike[str], band: int = 1) -> list[str] | None:
    """Category names as GDAL reports them (what ``gdalinfo`` prints under ``Categories``).

    None when libgdal cannot be located or the file cannot be opened.
    """
    lib = libgdal()
    if lib is None:
        return None
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
