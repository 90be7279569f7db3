"""Keep the process's memory bounded: glibc arenas and GDAL's block cache.

Numpy arrays of a few MB freed and reallocated from several threads fragment glibc's
per-thread arenas, so resident memory creeps up although Python holds a constant amount;
capping the number of arenas keeps peak RSS flat. (Fixing glibc's mmap threshold would flatten
it further but makes every large allocation page-fault afresh: measured 50% slower, so no.)
GDAL caches decompressed blocks up to 5% of RAM by default, which on a large input is the
biggest consumer of all; 64 MB holds a row of windows' worth of blocks for rasters up to
~16K px wide, which is what the overlapping reads reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8
GDAL_CACHE_MB = "64"


def bound_gdal_cache() -> None:
    """Cap GDAL's block cache (``GDAL_CACHEMAX``) unless the user set it."""
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def trim_heap() -> None:
    """Return free heap pages to the OS (``malloc_trim``); predict calls it per block row.

    An earlier 4.6 -> 2.0 GiB gain measured for it at 8192^2 was mostly a file-handle leak
    (fixed in :mod:`geoseg.io.raster`); with that fixed, a 16384x4096 strip peaks at 1.22 GiB
    with or without it. It stays as insurance against heap growth on long runs. Each call
    walks the heap (~6 ms in predict): once per band it took 0.13 s of a 4.7 s run at 4096^2,
    on the thread that stitches, so it runs once per block row.
    """
    libc = _LIBC
    if libc is not None:
        libc.malloc_trim(0)


def limit_malloc_fragmentation(arena_max: int = 2) -> bool:
    """Cap glibc's malloc arenas; return whether it was applied (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return libc.mallopt(M_ARENA_MAX, arena_max) == 1
    except (OSError, AttributeError):
        return False


_LIBC = _libc()
