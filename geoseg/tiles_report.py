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
    ring = [list(t * c) for c in corners]
    return ring + [ring[0]]


def write_geojson(
    path: str | os.PathLike,
    grid: Grid,
    info: Any,
    skipped: set[int],
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> None:
    """Write every window as a GeoJSON polygon (in the raster's CRS), atomically.

    The file goes through :func:`geoseg.io.files.atomic_write`: never over one of ``inputs``,
    never through a link, via an exclusive temporary, with the umask's mode.
    """
    from geoseg.io.files import atomic_write, check_target

    check_target(path, overwrite=overwrite, inputs=inputs, what="--geojson")
    features = [_feature(grid, i, w, info.transform, i in skipped) for i, w in enumerate(grid)]
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if info.crs_wkt:
        from rasterio.crs import CRS

        crs = CRS.from_wkt(info.crs_wkt)
        epsg = crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_string()
        doc["crs"] = {"type": "name", "properties": {"name": name}}
    atomic_write(path, json.dumps(doc), overwrite=overwrite, inputs=inputs, what="--geojson")


def _feature(grid: Grid, i: int, w: Any, transform: tuple[float, ...], skipped: bool) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [window_polygon(grid, i, transform)]},
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
