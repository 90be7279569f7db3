"""Shared fixtures: the real data folder beside the checkout, tiny generated rasters."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GEOSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def ckpt(request, tmp_path_factory) -> Path:
    """A tiny random checkpoint (3 bands, 4 classes); a module's ``CKPT_TILE`` sets its tile."""
    from helpers import make_checkpoint

    tile = getattr(request.module, "CKPT_TILE", 64)
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.geoseg", tile=tile)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real imagery in ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set GEOSEG_SHARED_DATA)")
    return SHARED_DATA


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    nodata: float | None = None,
    crs: str | None = "EPSG:32618",
    transform=None,
    **profile,
) -> Path:
    """Write ``data`` (bands, H, W) as a GeoTIFF with a real CRS and transform."""
    import rasterio
    from rasterio.transform import from_origin

    if data.ndim == 2:
        data = data[None]
    if transform is None and crs is not None:
        transform = from_origin(500000.0, 4200000.0, 10.0, 10.0)
    prof = dict(
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        nodata=nodata,
        crs=crs,
        transform=transform,
    )
    prof.update(profile)
    if prof["transform"] is None:
        prof.pop("transform")
    if prof["crs"] is None:
        prof.pop("crs")
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
    return path


@pytest.fixture
def make_raster(tmp_path):
    """Factory: a smooth random multi-band raster of any shape/dtype written as a GeoTIFF."""

    def _make(height=300, width=200, bands=3, dtype="uint8", seed=0, name="in.tif", **kw):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack(
            [np.sin(xx / (7 + 3 * b)) + np.cos(yy / (11 + 2 * b)) for b in range(bands)]
        )
        base = base + 0.3 * rng.standard_normal(base.shape)
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        if info is not None:
            lo, hi = max(info.min, -1000), min(info.max, 4000 if info.max > 255 else 255)
            data = ((base - base.min()) / np.ptp(base) * (hi - lo) + lo).astype(dtype)
        else:
            data = base.astype(dtype)
        return write_geotiff(tmp_path / name, data, **kw)

    return _make
