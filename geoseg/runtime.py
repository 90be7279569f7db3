"""Process-wide settings geoseg needs, applied once by the CLI and by the Python API.

A notebook that imports :mod:`geoseg` gets the same behaviour as ``geoseg`` on the command
line: GDAL's block cache bounded, glibc's allocator tuned for streaming, and rasterio's
per-open georeference warnings replaced by geoseg's one-line warning.
"""

from __future__ import annotations


def configure() -> None:
    """Apply geoseg's process-wide settings; idempotent, and settings the user made are kept."""
    from geoseg.io.gdal import apply_gdal_defaults
    from geoseg.run.memory import tune_malloc

    apply_gdal_defaults()
    tune_malloc()
    quiet_georeference_warnings()


def quiet_georeference_warnings() -> None:
    """Silence rasterio's per-open warnings about a missing georeference, process-wide.

    geoseg says it once, in words (``WARNING: ... has no georeference``). A process-wide filter
    is needed because ``warnings.catch_warnings`` is not thread-safe: with files opened on the
    reader and writer threads at once, a local filter can be undone by another thread.
    """
    import warnings

    for message in ("Dataset has no geotransform", "The given matrix is equal to Affine.identity"):
        warnings.filterwarnings("ignore", message=message)
