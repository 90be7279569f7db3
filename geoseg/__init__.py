"""geoseg: streaming, seamless, georeferenced semantic segmentation of very large rasters.

The Python API (imported on first use, so ``import geoseg`` stays light)::

    import geoseg

    geoseg.predict_file("scene.tif", "scene_classes.tif", "models/dubai-demo", tile=256)
    scores = geoseg.evaluate("scene_classes.tif", "labels.tif")
    geoseg.vectorize("scene_classes.tif", "scene.gpkg", min_area="100m2")
    areas = geoseg.stats("scene_classes.tif")

Options are the CLI's as keywords, or a :class:`geoseg.config.PredictConfig` (``config=``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute", imported when first used
_API = {
    "predict_file": "geoseg.api:predict_file",
    "evaluate": "geoseg.api:evaluate",
    "vectorize": "geoseg.api:vectorize",
    "stats": "geoseg.api:stats",
    "configure": "geoseg.runtime:configure",
    "PredictConfig": "geoseg.config:PredictConfig",
    "GeosegError": "geoseg.errors:GeosegError",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    """Import an API name on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    module, attr = _API[name].split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
