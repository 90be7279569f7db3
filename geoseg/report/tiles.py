"""Grid summaries and GeoJSON export of windows (used by ``geoseg tiles``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tilers.grid import Grid


@dataclass
class GridReport:
    """Counts describing a grid over one raster."""

    grid: Grid
    skipped_indices: set[int] = field(default_factory=set)
    checked: bool = False

    def rows(self) -> list[tuple[str, str]]:
        """Label/value pairs to print."""
        g = self.grid
        area = sum(g.clipped(w).height * g.clipped(w).width for w in g)
        skipped = str(len(self.skipped_indices)) if self.checked else "not checked"
        return [
            ("raster", f"{g.width} x {g.height} px"),
            ("tile", f"{g.tile[1]} x {g.tile[0]}"),
            ("overlap", f"{g.overlap[1]} x {g.overlap[0]}"),
            ("stride", f"{g.stride[1]} x {g.stride[0]}"),
            ("grid", f"{g.shape[1]} columns x {g.shape[0]} rows"),
            ("windows", str(len(g))),
            ("skipped", skipped),
            ("coverage", f"100% of pixels, each covered {area / (g.height * g.width):.2f}x"),
        ]


def grid_report(
    grid: Grid, source: Any | None = None, progress: Callable[[int, int], None] | None = None
) -> GridReport:
    """Summarize ``grid``; with a ``source``, read each window's mask to find all-nodata ones."""
    report = GridReport(grid, checked=source is not None)
    if source is None:
        return report
    for i, w in enumerate(grid):
        c = grid.clipped(w)  # the part inside the raster: padding is never valid anyway
        _, valid = source.read(c.row, c.col, c.height, c.width)
        if not valid.any():
            report.skipped_indices.add(i)
        if progress is not None:
            progress(i + 1, len(grid))
    return report


def window_polygon(grid: Grid, index: int, transform: tuple[float, ...]) -> list[list[float]]:
    """Corner ring of window ``index`` (clipped to the raster) in the raster's CRS."""
    from affine import Affine

    t = Affine(*transform[:6])
    w = grid.clipped(grid.window(index))
    corners = [(w.col, w.row), (w.col_stop, w.row), (w.col_stop, w.row_stop), (w.col, w.row_stop)]
    ring = [list(t @ c) for c in corners]
    return ring + [ring[0]]


def write_geojson(
    path: str | os.PathLike,
    grid: Grid,
    info: Any,
    skipped: set[int],
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    native: bool = False,
) -> None:
    """Write every window as a GeoJSON polygon, atomically.

    Coordinates are WGS84 longitude/latitude as RFC 7946 requires (edges densified, so a
    window stays faithful after reprojection), or with ``native`` the raster's own CRS, named
    in the pre-RFC ``crs`` member as GDAL reads it. A raster without a CRS keeps its own
    coordinates (there is nothing to reproject from). The file goes through
    :func:`geoseg.io.files.atomic_write`: never over one of ``inputs``, never through a link,
    via an exclusive temporary, with the umask's mode.
    """
    from geoseg.io.files import atomic_write, check_target

    check_target(path, overwrite=overwrite, inputs=inputs, what="--geojson")
    to_wgs84 = bool(info.crs_wkt) and not native
    features = []
    for i, w in enumerate(grid):
        ring = window_polygon(grid, i, info.transform)
        if to_wgs84:
            ring = wgs84_ring(ring, info.crs_wkt)
        features.append(_feature(grid, i, w, ring, i in skipped))
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if info.crs_wkt and native:
        doc["crs"] = {"type": "name", "properties": {"name": crs_urn(info.crs_wkt)}}
    atomic_write(path, json.dumps(doc), overwrite=overwrite, inputs=inputs, what="--geojson")


# Points per window edge after reprojection, and RFC 7946's suggested precision (~0.1 m).
EDGE_POINTS = 8
WGS84_DIGITS = 7


def wgs84_ring(ring: list[list[float]], crs_wkt: str) -> list[list[float]]:
    """A closed ring in the raster's CRS as WGS84 lon/lat, each edge densified."""
    from rasterio.warp import transform

    xs, ys = [], []
    for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True):
        for k in range(EDGE_POINTS):
            t = k / EDGE_POINTS
            xs.append(x0 + (x1 - x0) * t)
            ys.append(y0 + (y1 - y0) * t)
    lon, lat = transform(crs_wkt, "EPSG:4326", xs, ys)
    out = [[round(a, WGS84_DIGITS), round(b, WGS84_DIGITS)] for a, b in zip(lon, lat, strict=True)]
    return out + [out[0]]


def crs_urn(crs_wkt: str) -> str:
    """The OGC URN of an EPSG CRS (the CRS string otherwise), for GeoJSON's ``crs`` member."""
    from rasterio.crs import CRS

    crs = CRS.from_wkt(crs_wkt)
    epsg = crs.to_epsg()
    return f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_string()


def _feature(grid: Grid, i: int, w: Any, ring: list[list[float]], skipped: bool) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "index": i,
            "grid_row": i // grid.shape[1],
            "grid_col": i % grid.shape[1],
            "row": w.row,
            "col": w.col,
            "height": w.height,
            "width": w.width,
            "skipped": skipped,
        },
    }
