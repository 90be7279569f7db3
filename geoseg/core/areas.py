"""Areas on the ground, in square metres: geodesic on a geographic CRS, planar otherwise.

The one place that turns map geometry into m^2, so ``geoseg stats`` and ``geoseg vectorize
--min-area ...m2`` agree to the last digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.errors import GeosegError, InputError


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


def _degrees_per_unit(pcrs: Any) -> float:
    """Degrees per angular unit of a geographic CRS (1.0 for degrees; grads and radians too)."""
    info = pcrs.axis_info[0] if pcrs.axis_info else None
    factor = info.unit_conversion_factor if info is not None else None  # radians per unit
    return float(np.degrees(factor)) if factor else 1.0


def pixel_area_m2(crs: Any, transform: Sequence[float], height: int) -> float | np.ndarray:
    """Ground area in m^2 of one pixel of a grid, so that class areas are counts times this.

    On a projected CRS (or none, taken as a local grid in metres like
    :func:`polygon_areas_m2`) every pixel has the same planar area. On a geographic CRS a
    pixel's geodesic area depends only on its row (north-up grid), so each row is computed
    once: the area of its first pixel's polygon on the CRS's ellipsoid, as
    :func:`polygon_areas_m2` would compute it.

    Parameters
    ----------
    crs : Any
        The grid's CRS (WKT, EPSG string, rasterio or pyproj CRS); None for a local grid.
    transform : sequence of float
        Affine coefficients ``(a, b, c, d, e, f)`` of the grid.
    height : int
        Number of rows.

    Returns
    -------
    float or ndarray
        The area of every pixel (planar), or ``float64`` areas of shape ``(height,)``, one
        per row (geodesic).

    Raises
    ------
    InputError
        A rotated or sheared geographic grid, or rows beyond the poles.
    """
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    g = geod(crs)
    if g is None:
        unit = linear_unit_m(crs)
        return abs(a * e - b * d) * unit * unit
    if b != 0.0 or d != 0.0:
        raise InputError(
            f"the grid's transform {(a, b, c, d, e, f)} is rotated or sheared on a geographic "
            "CRS, where pixel areas vary along rows and columns: warp it north-up first "
            "(gdalwarp -t_srs EPSG:4326 in.tif out.tif)"
        )
    deg = _degrees_per_unit(_crs(crs))
    lats = (f + e * np.arange(height + 1, dtype=np.float64)) * deg
    if height and (np.abs(lats).max() > 90.0 + 1e-9):
        raise InputError(
            f"the grid spans latitudes {lats.min():.6g}..{lats.max():.6g}, beyond the poles; "
            "check its transform and CRS (is it really geographic?)"
        )
    lats = np.clip(lats, -90.0, 90.0)
    lon0, lon1 = c * deg, (c + a) * deg
    lons = [lon0, lon1, lon1, lon0]
    polygon_area = g.polygon_area_perimeter
    areas = np.empty(height, np.float64)
    for row in range(height):  # ~3 us a row: a 10^6-row map takes seconds
        top, bottom = lats[row], lats[row + 1]
        areas[row] = abs(polygon_area(lons, [top, top, bottom, bottom])[0])
    return areas


def areal_scale(crs: Any, x: float, y: float) -> float:
    """Planar m^2 of ``crs`` per ground m^2 at map point ``(x, y)`` (the areal scale factor).

    Planar areas are ground areas only on an equal-area projection: this is 1.0 there and
    about 1.7 for Web Mercator at 40 degrees, so a caller can warn when planar areas are far
    from ground areas. NaN where it cannot be computed (no CRS, a geographic CRS, a point
    outside the projection's domain).
    """
    from pyproj import Proj, Transformer
    from pyproj.exceptions import ProjError

    pcrs = _crs(crs)
    if pcrs is None or pcrs.is_geographic:
        return float("nan")
    try:
        to_lonlat = Transformer.from_crs(pcrs, pcrs.geodetic_crs, always_xy=True)
        lon, lat = to_lonlat.transform(x, y)
        factors = Proj(pcrs).get_factors(lon, lat)
    except (ProjError, RuntimeError, TypeError):
        return float("nan")
    return float(factors.areal_scale)
