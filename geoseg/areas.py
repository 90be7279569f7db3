"""Areas on the ground, in square metres: geodesic on a geographic CRS, planar otherwise.

The one place that turns map geometry into m^2, so ``geoseg stats`` and ``geoseg vectorize
--min-area ...m2`` agree to the last digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.errors import GeosegError


def _crs(crs: Any) -> Any:
    """A pyproj CRS from anything rasterio or pyproj names a CRS with (WKT, EPSG, objects)."""
    from pyproj import CRS

    if crs is None:
        return None
    if hasattr(crs, "to_wkt"):
        crs = crs.to_wkt()
    return CRS.from_user_input(crs)


def linear_unit_m(crs: Any) -> float:
    """Metres per map unit of a projected CRS (1.0 for metres, 0.3048 for feet)."""
    pcrs = _crs(crs)
    if pcrs is None:
        return 1.0
    if pcrs.is_geographic:
        raise GeosegError(f"{pcrs.name} is geographic: its areas are geodesic, not planar")
    factor = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    return float(factor or 1.0)


def geod(crs: Any) -> Any:
    """The ellipsoid of a geographic CRS as a ``pyproj.Geod`` (None for a projected CRS)."""
    pcrs = _crs(crs)
    if pcrs is None or not pcrs.is_geographic:
        return None
    return pcrs.get_geod()


def polygon_areas_m2(geometries: Sequence[Any], crs: Any) -> np.ndarray:
    """Area in m^2 of each shapely geometry given in ``crs`` (geodesic when geographic).

    Parameters
    ----------
    geometries : sequence of shapely geometries
        Polygons or multipolygons in the coordinates of ``crs``.
    crs : Any
        Their CRS; None means a local grid in metres.

    Returns
    -------
    ndarray
        ``float64`` areas, one per geometry, always non-negative.
    """
    import shapely

    g = geod(crs)
    if g is None:
        unit = linear_unit_m(crs)
        return shapely.area(np.asarray(geometries, dtype=object)) * unit * unit
    return np.array([abs(g.geometry_area_perimeter(geom)[0]) for geom in geometries], np.float64)
