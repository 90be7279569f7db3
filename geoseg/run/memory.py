"""Process-wide memory settings: glibc's allocator (GDAL's block cache: :mod:`geoseg.io.gdal`).

glibc's defaults suit neither a model on the CPU nor a stitcher:

* Every model call allocates and frees tens of MB of activations. With the default *dynamic*
  thresholds glibc returns that memory to the OS between calls (heap trimming, and ``mmap``
  for blocks above a threshold that starts at 128 KB), so the next call takes it back page by
  page: a page fault per 4 KB. Measured with the demo model, two threads, 220 calls of
  2 x 256^2 windows: 1.4 million page faults, 2.3 s of system time, 4.6 s; with fixed
  thresholds (allocations up to 32 MB from the heap, the heap top trimmed beyond 64 MB free)
  900 page faults, 0.07 s of system time, 3.5 s. A 32 MB trim threshold still faulted 0.2
  million times: one call's activations exceed it.
* Arrays of a few MB freed and reallocated from several threads spread over glibc's
  per-thread arenas, and resident memory creeps up although Python holds a constant amount;
  two arenas keep peak RSS flat.

This process applies them with ``mallopt`` (:func:`tune_malloc`); the worker processes of a
local cluster get them as glibc's environment variables at their start
(:func:`malloc_environ`), in place of Dask's own ``MALLOC_TRIM_THRESHOLD_`` of 64 KB, which
trims the heap at nearly every free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# glibc's ceiling for the mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
ARENA_MAX = 2
# free heap bytes beyond which a wide band's release trims the heap (WideBandTrimmer)
MAX_FREE_HEAP = 128 * 2**20


def _libc() -> Any:
    """glibc, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later): the heap's totals, in bytes."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


_LIBC = _libc()
if getattr(_LIBC, "mallinfo2", None) is not None:
    _LIBC.mallinfo2.restype = MallInfo2


def heap_free_bytes() -> int | None:
    """Bytes glibc holds free in its heaps (``mallinfo2().fordblks``), or None where unknown."""
    mallinfo2 = getattr(_LIBC, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    return int(mallinfo2().fordblks)


class WideBandTrimmer:
    """Return free heap pages to the OS (``malloc_trim``) after a wide band, when they pile up.

    The stitcher's cells and seams of a wide raster are big, and what the heap keeps of them
    after they are freed counts in the peak. But a trim hands back every free page, which the
    next strips' arrays then fault in again one 4 KB page at a time (see benchmarks/README.md).
    So the heap is trimmed after a band only when the band is wide (from about 5000 px with
    the demo model) and glibc holds more than ``max_free`` bytes free: the peak stays within
    ``max_free`` of the arrays in use, and a long run trims every few strips, not after each.

    Parameters
    ----------
    min_band : int
        Bytes of a band's buffers from which it is trimmed after.
    max_free : int
        Free heap bytes above which it is trimmed after (always, where glibc cannot tell).
    """

    def __init__(self, min_band: int = 32 * 2**20, max_free: int = MAX_FREE_HEAP) -> None:
        self.min_band, self.max_free = min_band, max_free

    def released(self, nbytes: int) -> None:
        """A band of ``nbytes`` was consumed and freed."""
        if nbytes < self.min_band or _LIBC is None:
            return
        free = heap_free_bytes()
        if free is None or free > self.max_free:
            _LIBC.malloc_trim(0)


def malloc_environ() -> dict[str, str]:
    """:func:`tune_malloc`'s settings as the variables glibc reads when a process starts."""
    return {
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
        "MALLOC_ARENA_MAX": str(ARENA_MAX),
    }


def tune_malloc() -> bool:
    """Fix glibc's allocator thresholds and cap its arenas (see the module notes).

    Returns
    -------
    bool
        Whether every setting was applied (False off glibc, where nothing is changed).
    """
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_ARENA_MAX, ARENA_MAX),
    )
    applied = [mallopt(option, value) == 1 for option, value in settings]  # each one, always
    return all(applied)
