"""GDAL beyond rasterio's API: the options geoseg sets, PAM sidecars, the C library itself.

* **Options** (:data:`GDAL_DEFAULTS`): every GDAL option geoseg sets is set here, only where the
  user's environment has none. GDAL caches decompressed blocks up to 5% of RAM by default, the
  biggest consumer of all on a large input; 64 MB holds a row of windows' worth of blocks for
  rasters up to ~16K px wide, which is what the overlapping reads reuse. A remote input is
  retried on transient HTTP errors (GDAL retries none by default), and its ranges are cached
  (64 MB instead of 16 MB) because overlapping windows re-read the same blocks.
* **PAM sidecars**: GDAL's GTiff driver keeps band category names in ``<file>.aux.xml``
  (``<PAMRasterBand><CategoryNames>``); it cannot embed them in the TIFF, so geoseg writes that
  sidecar itself (renamed into place atomically with the image).
* **The C library** (:func:`libgdal`): the libgdal rasterio loaded, through ctypes, for the few
  calls rasterio does not expose (a network file's HTTP headers, flushing a dataset being
  written without closing it: :func:`flush_in_place`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

__all__ = [
    "GDAL_DEFAULTS",
    "apply_gdal_defaults",
    "best_compression",
    "dataset_handle",
    "flush_in_place",
    "libgdal",
    "pam_with_categories",
    "sidecar_path",
]

GDAL_CACHE_MB = "64"
# GDAL options geoseg sets process-wide (environment variables: GDAL reads them where no
# config option overrides them, and worker processes inherit them).
GDAL_DEFAULTS = {
    "GDAL_CACHEMAX": GDAL_CACHE_MB,
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 * 2**20),
}
# ... and those set only while a network raster is opened (thread-local): not listing its
# remote "folder" saves a request per sidecar GDAL would probe, which a local file needs.
GDAL_REMOTE_OPEN_DEFAULTS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def apply_gdal_defaults() -> None:
    """Apply :data:`GDAL_DEFAULTS` (block cache, HTTP retries) where the user set none."""
    apply_gdal_settings(GDAL_DEFAULTS)


def apply_gdal_settings(settings: dict[str, str]) -> None:
    """Set GDAL options the environment does not already set (a worker gets the client's)."""
    for key, value in settings.items():
        os.environ.setdefault(key, value)


def gdal_settings() -> dict[str, str]:
    """The GDAL options geoseg manages, as this process's environment sets them now."""
    keys = (*GDAL_DEFAULTS, *GDAL_REMOTE_OPEN_DEFAULTS)
    return {k: os.environ[k] for k in keys if k in os.environ}


def remote_open_options() -> dict[str, str]:
    """Options for opening a network raster: the user's value, else geoseg's default."""
    return {k: os.environ.get(k, v) for k, v in GDAL_REMOTE_OPEN_DEFAULTS.items()}


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
    """Files that may be the libgdal rasterio loaded: mapped already, bundled, or the system's."""
    import rasterio

    found: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        found = [ln.split()[-1] for ln in maps if "/libgdal" in ln]
    found = [n for n in dict.fromkeys(found) if os.path.isfile(n)]  # not "(deleted)"
    pkg = Path(rasterio.__file__).resolve().parent
    for folder in (pkg.parent / "rasterio.libs", pkg / ".dylibs"):
        if folder.is_dir():
            found += sorted(str(p) for p in folder.iterdir() if p.name.startswith("libgdal"))
    system = ctypes.util.find_library("gdal")
    return found + ([system] if system else [])


@functools.cache
def libgdal() -> Any | None:
    """The libgdal rasterio uses, through ctypes (loaded already: the same instance), or None.

    Another package (pyogrio) may have loaded its own libgdal too, at a lower address; the one
    returned is the one that sees a config option set through rasterio.
    Callers declare the argument and result types of the functions they call.
    """
    import rasterio  # noqa: F401  (loads and registers GDAL first)

    for candidate in _libgdal_candidates():
        try:
            lib = ctypes.CDLL(candidate)
            lib.GDALVersionInfo  # noqa: B018  (a libgdal, not a namesake)
        except (OSError, AttributeError):
            continue
        if _is_rasterios(lib):
            return lib
    return None


def _is_rasterios(lib: Any) -> bool:
    """Whether ``lib`` is the GDAL instance rasterio calls (config options are per instance)."""
    import rasterio

    lib.CPLGetConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.CPLGetConfigOption.restype = ctypes.c_char_p
    token = f"geoseg-{os.getpid()}-{id(lib)}"
    with rasterio.Env(GEOSEG_WHICH_GDAL=token):
        return lib.CPLGetConfigOption(b"GEOSEG_WHICH_GDAL", None) == token.encode()


# GDALGetOpenDatasets fills one process-wide array: one caller at a time.
_OPEN_LIST = threading.Lock()


def _declare_dataset_calls(lib: Any) -> None:
    lib.GDALGetOpenDatasets.argtypes = [
        ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p)),
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.GDALGetOpenDatasets.restype = None
    lib.GDALGetDescription.argtypes = [ctypes.c_void_p]
    lib.GDALGetDescription.restype = ctypes.c_char_p
    lib.GDALFlushCache.argtypes = [ctypes.c_void_p]
    lib.GDALFlushCache.restype = ctypes.c_int


def dataset_handle(dataset: Any) -> int | None:
    """The ``GDALDatasetH`` of an open rasterio dataset, or None where it is not found.

    rasterio keeps the handle in a C field of the dataset object and exposes no call that
    flushes a dataset without closing it. The handle is the one word of the object's own memory
    that equals a dataset GDAL lists as open (a pointer comparison, nothing dereferenced), and
    it must carry the dataset's file name; anything else gives None, and the caller falls back
    to closing the file.
    """
    lib = libgdal()
    if lib is None or dataset.closed:
        return None
    _declare_dataset_calls(lib)
    listed = ctypes.POINTER(ctypes.c_void_p)()
    count = ctypes.c_int()
    with _OPEN_LIST:
        lib.GDALGetOpenDatasets(ctypes.byref(listed), ctypes.byref(count))
        known = {listed[i] for i in range(count.value)}
    slots = type(dataset).__basicsize__ // ctypes.sizeof(ctypes.c_void_p)
    words = (ctypes.c_void_p * slots).from_address(id(dataset))
    found = {w for w in words if w in known}
    if len(found) != 1:
        return None
    handle = found.pop()
    return handle if lib.GDALGetDescription(handle) == os.fsencode(dataset.name) else None


def flush_in_place(handle: int) -> bool:
    """Write a dataset's pending blocks and directory to its file, keeping it open.

    ``GDALFlushCache`` is called twice: after one call, another handle on the file (another
    process after a kill) did not see the last block row yet (GDAL 3.10, whose TIFF layer
    buffers its writes); after the second it did. The caller still fsyncs the file, and
    should read it back once to check (see
    :meth:`geoseg.io.writers.GeoTiffWriter.flush`). Returns False when GDAL reports an error.
    """
    lib = libgdal()
    return lib is not None and all(lib.GDALFlushCache(handle) == 0 for _ in range(2))
