"""Keep the C heap from growing with the raster (glibc only; a no-op elsewhere).

Numpy arrays of a few MB freed and reallocated from several threads fragment glibc's per-thread
arenas, and glibc's adaptive mmap threshold moves such arrays onto the heap: the process's
resident memory then grows with the number of windows processed although Python holds a
constant amount. Fixing the mmap threshold (large arrays always go back to the OS when freed)
and capping the number of arenas keeps peak RSS flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def limit_malloc_fragmentation(mmap_threshold: int = 1 << 20, arena_max: int = 2) -> bool:
    """Apply ``mallopt`` settings; return whether they were applied (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
        ok &= libc.mallopt(M_ARENA_MAX, arena_max) == 1
    except (OSError, AttributeError):
        return False
    return bool(ok)
