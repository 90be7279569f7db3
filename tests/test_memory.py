import sys

import pytest

from geoseg.memory import limit_malloc_fragmentation


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_malloc_settings_are_applied_on_glibc():
    assert limit_malloc_fragmentation() is True
