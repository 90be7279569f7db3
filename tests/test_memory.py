import os
import subprocess
import sys

import pytest

from geoseg.run.memory import tune_malloc

REUSE_CHILD = """
import resource, sys
import numpy as np
from geoseg.run.memory import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()

def call():  # like a model call: ~45 MB of buffers allocated, used and freed
    buffers = [np.ones(15 * 2**20 // 8) for _ in range(3)]
    del buffers

call()
call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    call()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    # glibc's defaults: without the MALLOC_* variables that Dask's nannies export into the
    # process that starts a local cluster (an earlier test's)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", REUSE_CHILD, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_malloc_settings_are_applied_on_glibc():
    assert tune_malloc() is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tuned_malloc_reuses_freed_buffers_instead_of_faulting_them_in_again():
    # 20 calls touch 20 x 45 MB = 230k pages. With glibc's default (dynamic) thresholds part
    # of the freed memory goes back to the OS after each call and is faulted in again (20k
    # faults here); the tuned ones keep it
    touched = 20 * 45 * 2**20 // 4096
    tuned, default = page_faults("tuned"), page_faults("default")
    assert tuned < touched // 50
    assert default > tuned


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux-only")
def test_peak_memory_is_the_programs_own_not_its_parents():
    # ru_maxrss is inherited across fork/exec: a geoseg started from a big process would
    # report the parent's peak; VmHWM counts only the child's own memory
    import numpy as np

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB resident in this (parent) process
    code = "from geoseg.run.pipeline import peak_rss_bytes; print(peak_rss_bytes())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child_peak = int(out.stdout)
    assert 0 < child_peak < 300 * 2**20, child_peak
    assert ballast.sum() > 0


def test_only_wide_bands_are_trimmed_after(monkeypatch):
    # a trim also returns the model's free activations (faulted in again by the next calls),
    # so narrow bands, whose leftovers do not matter, are not trimmed after
    from geoseg.run import memory

    trims = []

    class Libc:
        def malloc_trim(self, pad):
            trims.append(pad)

    monkeypatch.setattr(memory, "_LIBC", Libc())
    trimmer = memory.WideBandTrimmer(min_band=32 * 2**20)
    trimmer.released(22 * 2**20)  # a 4096 px wide band of the demo model
    assert trims == []
    trimmer.released(88 * 2**20)  # a 16384 px wide one
    assert trims == [0]


def test_a_wide_band_is_trimmed_after_only_when_free_heap_piles_up(monkeypatch):
    # each trim makes the next strips fault every page in again: trim when glibc holds more
    # than max_free free, not after every wide band
    from geoseg.run import memory

    trims, free = [], [0]

    class Libc:
        def malloc_trim(self, pad):
            trims.append(pad)

        def mallinfo2(self):
            return memory.MallInfo2(fordblks=free[0])

    monkeypatch.setattr(memory, "_LIBC", Libc())
    trimmer = memory.WideBandTrimmer(min_band=32 * 2**20, max_free=128 * 2**20)
    free[0] = 100 * 2**20
    trimmer.released(88 * 2**20)
    assert trims == []
    free[0] = 129 * 2**20
    trimmer.released(88 * 2**20)
    assert trims == [0]
    trimmer.released(22 * 2**20)  # narrow: never
    assert trims == [0]


def test_heap_free_bytes_sees_freed_arrays():
    from geoseg.run import memory

    if memory.heap_free_bytes() is None:
        pytest.skip("glibc's mallinfo2 is not available here (not glibc 2.33+)")
    import numpy as np

    # 64 KB arrays come from the heap (below glibc's mmap threshold); freeing every other one
    # leaves free chunks inside the heap, which no automatic trim returns
    arrays = [np.ones(8 * 2**10) for _ in range(400)]
    before = memory.heap_free_bytes()
    del arrays[::2]
    assert memory.heap_free_bytes() - before >= 100 * 64 * 2**10
    assert len(arrays) == 200


def test_the_readme_gives_self_started_workers_the_same_allocator_settings():
    from pathlib import Path

    from geoseg.run.memory import malloc_environ

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for key, value in malloc_environ().items():
        assert f"{key}={value}" in readme, key
