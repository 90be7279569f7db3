import sys

import pytest

from geoseg.memory import limit_malloc_fragmentation


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_malloc_settings_are_applied_on_glibc():
    assert limit_malloc_fragmentation() is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux-only")
def test_peak_memory_is_the_programs_own_not_its_parents():
    # ru_maxrss is inherited across fork/exec: a geoseg started from a big process would
    # report the parent's peak; VmHWM counts only the child's own memory
    import subprocess

    import numpy as np

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB resident in this (parent) process
    code = "from geoseg.pipeline import peak_rss_bytes; print(peak_rss_bytes())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child_peak = int(out.stdout)
    assert 0 < child_peak < 300 * 2**20, child_peak
    assert ballast.sum() > 0
