"""Per-class pixel counts, areas and shares of a class map, whole or per polygon (zonal).

Counting is pure: :func:`count_block` and :class:`ClassTally` add up blocks of class ids with
their validity and pixel areas, so every caller that holds blocks (this module's reader,
``geoseg predict --stats`` on the blocks it writes) gets the same numbers. The I/O is kept
apart: the class map is read block by block through :mod:`geoseg.io.raster` (memory does not
grow with the map), polygons through pyogrio (any OGR format), reprojected to the class map's
CRS, each rasterized at pixel centres on its own bounding window, the only part of the map read
for it. Pixel areas come from :mod:`geoseg.core.areas` (geodesic on a geographic CRS, planar
otherwise), so ``geoseg stats`` and ``geoseg vectorize`` agree on what a square metre is.

Decisions, documented once here:

- nodata pixels (the map's nodata value or mask, plus ``nodata=`` values) are not counted;
  shares are fractions of the valid area (equal to pixel fractions on a planar grid);
- classes named by the map (``CLASS_NAMES`` tags) are listed even with zero pixels, other ids
  only where they occur; negative ids (not class ids) are listed as found, so a map without
  a nodata tag (Sen1Floods11's -1) shows them: exclude them with ``nodata=-1``;
- a map without a CRS is a local grid whose map unit is the metre (as in
  :func:`geoseg.core.areas.polygon_areas_m2`), said in a note; planar areas on a projection that is
  far from equal-area (Web Mercator) are map areas, also said in a note;
- polygons without a CRS are taken to be in the map's CRS (with a note); polygons outside the
  map count zero pixels (with a note), but an AOI none of whose polygons meets the map is an
  error (a wrong CRS, most likely); each polygon is counted on its own, so overlapping polygons
  both count the pixels they share; vertices are reprojected, edges are not densified (as
  ``ogr2ogr -t_srs`` does).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ConfigError, InputError

PathLike = str | os.PathLike[str]
Progress = Callable[[int, int], None]

M2_PER_HA = 10_000.0
MAX_BLOCK = 8192  # a block costs about 40 bytes a pixel while counted: ~2.7 GB at 8192^2
# Planar areas on a CRS whose areal scale at the map centre is further than this from 1 get a
# note: they are map areas, not ground areas (Web Mercator at 40 degrees: 1.7).
SCALE_TOLERANCE = 0.01
# Ids spanning more than this many values are counted through np.unique, not a dense bincount.
DENSE_SPAN = 1 << 20
POLYGON_TYPES = ("Polygon", "MultiPolygon")
CSV_FIELDS = ("zone", "class_id", "class_name", "pixels", "area_m2", "area_ha", "share")

__all__ = [
    "ClassArea",
    "ClassMap",
    "ClassTally",
    "StatsResult",
    "Zone",
    "ZoneStats",
    "class_stats",
    "count_block",
    "open_classmap",
    "read_aoi",
    "vector_files",
]


# --------------------------------------------------------------------------------------------
# Pure counting: blocks in, counts and areas out (no I/O)
# --------------------------------------------------------------------------------------------


def _block_areas(pixel_area: float | np.ndarray, shape: tuple[int, ...]) -> float | np.ndarray:
    """A scalar pixel area, or one broadcast to ``shape`` (a 1-D array holds one per row)."""
    area = np.asarray(pixel_area, dtype=np.float64)
    if area.ndim == 0:
        return float(area)
    if area.ndim == 1:
        area = area[:, None]
    try:
        return np.broadcast_to(area, shape)
    except ValueError:
        raise InputError(
            f"pixel areas of shape {np.shape(pixel_area)} do not fit a block of shape {shape}; "
            "give one area, one per row or one per pixel"
        ) from None


def count_block(
    ids: np.ndarray,
    valid: np.ndarray | None = None,
    pixel_area: float | np.ndarray = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The class ids present in a block, their pixel counts and their areas.

    Pure, so any reader of blocks adds up the same numbers; the areas of a class are its
    pixels' areas summed (one multiplication when every pixel has the same area).

    Parameters
    ----------
    ids : ndarray
        ``(h, w)`` integer class ids.
    valid : ndarray, optional
        ``(h, w)`` bool: the pixels to count (default all).
    pixel_area : float or ndarray
        One area for every pixel, ``(h,)`` one per row, or ``(h, w)`` one per pixel (m^2).

    Returns
    -------
    (ndarray, ndarray, ndarray)
        Sorted ``int64`` class ids, their ``int64`` pixel counts and ``float64`` areas.
    """
    from geoseg.core.labels import check_integer_dtype

    ids = np.asarray(ids)
    check_integer_dtype(ids.dtype, "class ids")
    area = _block_areas(pixel_area, ids.shape)
    weights = None if isinstance(area, float) else area
    if valid is not None:
        vals = ids[np.asarray(valid, dtype=bool)]
        weights = None if weights is None else weights[valid]
    else:
        vals = ids.ravel()
        weights = None if weights is None else weights.ravel()
    if vals.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    lo, hi = int(vals.min()), int(vals.max())
    if hi - lo < DENSE_SPAN:
        base = np.arange(lo, hi + 1, dtype=np.int64)
        index = np.subtract(vals, lo, dtype=np.int64)  # one int64 copy, never an overflow
    else:
        base, index = np.unique(vals.astype(np.int64), return_inverse=True)
    counts = np.bincount(index, minlength=base.size)
    if weights is None:
        areas = counts * float(area)
    else:
        areas = np.bincount(index, weights=weights, minlength=base.size)
    present = np.flatnonzero(counts)
    return base[present], counts[present].astype(np.int64), areas[present]


@dataclass
class ClassTally:
    """Running per-class pixel counts and areas of one zone, fed block by block.

    Counts are exact integers; areas are float sums, so the order of blocks changes them by
    rounding only.
    """

    pixels: dict[int, int] = field(default_factory=dict)
    areas: dict[int, float] = field(default_factory=dict)
    nodata_pixels: int = 0

    def add(
        self,
        ids: np.ndarray,
        valid: np.ndarray | None = None,
        pixel_area: float | np.ndarray = 1.0,
        where: np.ndarray | None = None,
    ) -> None:
        """Count a block: ``valid`` pixels are counted, ``where`` selects the zone's pixels.

        Pixels inside the zone (``where``) that are not ``valid`` are counted as nodata.
        """
        ids = np.asarray(ids)
        ok = None if valid is None else np.asarray(valid, bool)
        if where is not None:
            inside = np.asarray(where, bool)
            ok = inside if ok is None else inside & ok
        n_inside = ids.size if where is None else int(inside.sum())
        self.nodata_pixels += n_inside - (n_inside if ok is None else int(ok.sum()))
        classes, counts, areas = count_block(ids, ok, pixel_area)
        for c, n, a in zip(classes.tolist(), counts.tolist(), areas.tolist(), strict=True):
            self.pixels[c] = self.pixels.get(c, 0) + n
            self.areas[c] = self.areas.get(c, 0.0) + a

    def merge(self, other: ClassTally) -> ClassTally:
        """Add another tally's counts to this one (blocks counted elsewhere); return self."""
        for c, n in other.pixels.items():
            self.pixels[c] = self.pixels.get(c, 0) + n
            self.areas[c] = self.areas.get(c, 0.0) + other.areas.get(c, 0.0)
        self.nodata_pixels += other.nodata_pixels
        return self

    @property
    def valid_pixels(self) -> int:
        """Pixels counted in any class."""
        return sum(self.pixels.values())

    @property
    def area_m2(self) -> float:
        """The valid area: the classes' areas summed (exactly rounded)."""
        return math.fsum(self.areas.values())


# --------------------------------------------------------------------------------------------
# Results: rows, JSON, CSV and a table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassArea:
    """One class in one zone: pixels, area and share of the zone's valid area."""

    zone: int | str | None
    class_id: int
    name: str
    pixels: int
    area_m2: float
    share: float | None

    @property
    def area_ha(self) -> float:
        """The area in hectares."""
        return self.area_m2 / M2_PER_HA

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values (``zone`` is None for the whole map)."""
        return {
            "id": self.class_id,
            "name": self.name,
            "pixels": self.pixels,
            "area_m2": self.area_m2,
            "area_ha": self.area_ha,
            "share": self.share,
        }


@dataclass
class ZoneStats:
    """The tally of one zone: the whole map (``zone`` None) or one polygon."""

    zone: int | str | None
    tally: ClassTally


@dataclass
class StatsResult:
    """Per-class statistics of a class map, for the whole map or per polygon.

    Attributes
    ----------
    classmap : str
        The class map's path.
    crs : str or None
        Its CRS (``EPSG:3857`` or a name); None without one.
    area_method : str
        ``"geodesic"`` or ``"planar"``.
    class_names : list of str or None
        Names from the class map's tags; None when it carries none.
    nodata : list of float
        Values not counted.
    zones : list of ZoneStats
        One for the whole map, or one per polygon of the AOI.
    notes : list of str
        What a reader of the numbers should know (areas on a non-equal-area CRS...).
    aoi : str or None
        The polygons' path.
    """

    classmap: str
    crs: str | None
    area_method: str
    class_names: list[str] | None
    nodata: list[float]
    zones: list[ZoneStats]
    notes: list[str] = field(default_factory=list)
    aoi: str | None = None

    def class_ids(self) -> list[int]:
        """Ids listed in every zone: the named ones (nodata aside) and any that occur."""
        named = set(range(len(self.class_names or [])))
        named -= {int(v) for v in self.nodata if float(v).is_integer()}
        seen = {c for z in self.zones for c in z.tally.pixels}
        return sorted(named | seen)

    def name(self, class_id: int) -> str:
        """The class's name from the map, else ``"class N"``."""
        names = self.class_names or []
        return names[class_id] if 0 <= class_id < len(names) else f"class {class_id}"

    def zone_rows(self, zone: ZoneStats) -> list[ClassArea]:
        """One row per listed class of ``zone``."""
        t = zone.tally
        total = t.area_m2
        return [
            ClassArea(
                zone=zone.zone,
                class_id=c,
                name=self.name(c),
                pixels=t.pixels.get(c, 0),
                area_m2=t.areas.get(c, 0.0),
                share=t.areas.get(c, 0.0) / total if total > 0 else None,
            )
            for c in self.class_ids()
        ]

    def rows(self) -> list[ClassArea]:
        """Every (zone, class) row, zones in order."""
        return [row for z in self.zones for row in self.zone_rows(z)]

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        zones = [
            {
                "zone": z.zone,
                "pixels": z.tally.valid_pixels,
                "nodata_pixels": z.tally.nodata_pixels,
                "area_m2": z.tally.area_m2,
                "area_ha": z.tally.area_m2 / M2_PER_HA,
                "classes": [r.to_dict() for r in self.zone_rows(z)],
            }
            for z in self.zones
        ]
        return {
            "classmap": self.classmap,
            "aoi": self.aoi,
            "crs": self.crs,
            "area_method": self.area_method,
            "nodata": self.nodata,
            "notes": self.notes,
            "zones": zones,
        }

    def to_json(self) -> str:
        """The :meth:`to_dict` document as indented JSON (one trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"  # dates in labels

    def to_csv(self) -> str:
        """One line per (zone, class): :data:`CSV_FIELDS`; the zone is empty for the whole map."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for r in self.rows():
            zone = "" if r.zone is None else r.zone
            share = "" if r.share is None else repr(r.share)
            w.writerow(
                [zone, r.class_id, r.name, r.pixels, repr(r.area_m2), repr(r.area_ha), share]
            )
        return buf.getvalue()

    def table(self) -> str:
        """A plain-text table per zone: id, class, pixels, m^2, ha, share %."""
        lines = [f"{self.classmap}: {self.crs or 'no CRS'}, {self.area_method} areas"]
        for z in self.zones:
            lines += [""] if len(self.zones) > 1 or z.zone is not None else []
            if z.zone is not None:
                lines.append(f"zone {z.zone}")
            lines.append(
                f"{'id':>5}  {'class':<20} {'pixels':>14} {'area m2':>18} {'ha':>14} {'share %':>8}"
            )
            for r in self.zone_rows(z):
                share = "n/a" if r.share is None else f"{100 * r.share:.2f}"
                lines.append(
                    f"{r.class_id:>5}  {r.name[:20]:<20} {r.pixels:>14,} {r.area_m2:>18,.2f} "
                    f"{r.area_ha:>14,.4f} {share:>8}"
                )
            t = z.tally
            lines.append(
                f"{'':>5}  {'total (valid)':<20} {t.valid_pixels:>14,} {t.area_m2:>18,.2f} "
                f"{t.area_m2 / M2_PER_HA:>14,.4f}"
            )
            lines.append(f"{'':>5}  {'nodata':<20} {t.nodata_pixels:>14,}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Reading a class map
# --------------------------------------------------------------------------------------------


@dataclass
class ClassMap:
    """An open class map: its reader, grid, names, nodata and the area of its pixels."""

    path: str
    source: Any
    crs_wkt: str | None
    transform: tuple[float, ...]
    height: int
    width: int
    class_names: list[str] | None
    nodata: float | None
    extra_nodata: tuple[float, ...]
    pixel_area: float | np.ndarray
    area_method: str
    notes: list[str] = field(default_factory=list)

    @property
    def nodata_values(self) -> list[float]:
        """Every value not counted: the map's nodata value, then the extra ones."""
        return [v for v in (self.nodata, *self.extra_nodata) if v is not None]

    def block_area(self, row: int, height: int) -> float | np.ndarray:
        """The pixel areas of rows ``row .. row + height`` (a float, or one per row)."""
        if isinstance(self.pixel_area, float):
            return self.pixel_area
        return self.pixel_area[row : row + height]

    def read_ids(
        self, row: int, col: int, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class ids (``int32``) and validity of a window inside the map."""
        data, valid = self.source.read(row, col, height, width)
        ids = data[0].astype(np.int32)  # exact: class maps are at most 16-bit
        for value in self.extra_nodata:  # the map's own nodata is masked by the reader
            valid &= ids != value
        return ids, valid


def _class_names(source: Any) -> list[str] | None:
    """Names a class map carries in its tags (GeoTIFF tags, Zarr attributes)."""
    from geoseg.core.labels import class_names_from_tags

    return class_names_from_tags(source.tags())


def _crs_label(crs_wkt: str | None) -> str | None:
    """``EPSG:n`` where the CRS has a code, else its name."""
    if crs_wkt is None:
        return None
    from pyproj import CRS

    crs = CRS.from_wkt(crs_wkt)
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.name


def _area_notes(cmap: ClassMap) -> list[str]:
    """Say where areas are not ground areas: no CRS, or a projection far from equal-area."""
    from affine import Affine

    from geoseg.core.areas import areal_scale

    if cmap.crs_wkt is None:
        return [
            f"{cmap.path} has no CRS: areas take one map unit as one metre "
            f"({cmap.pixel_area:g} m2 a pixel); give it a CRS (gdal_edit -a_srs) for true areas"
        ]
    if cmap.area_method != "planar":
        return []
    x, y = Affine(*cmap.transform[:6]) @ (cmap.width / 2, cmap.height / 2)
    scale = areal_scale(cmap.crs_wkt, x, y)
    if math.isnan(scale) or abs(scale - 1.0) <= SCALE_TOLERANCE:
        return []
    return [
        f"areas are planar in {_crs_label(cmap.crs_wkt)}, which is not equal-area: at the map "
        f"centre one map m2 is {1 / scale:.3g} ground m2; reproject the class map to an "
        "equal-area CRS (e.g. gdalwarp -r near -t_srs EPSG:6933) for ground areas"
    ]


def open_classmap(path: PathLike, nodata: Sequence[float] = ()) -> ClassMap:
    """Open and check a class map (one band of 8/16-bit integers) for block reading.

    Parameters
    ----------
    path : path-like
        A GeoTIFF/COG/VRT or ``.zarr`` class map.
    nodata : sequence of float
        Values not to count, besides the map's own nodata value and mask.

    Raises
    ------
    RasterReadError, LabelError, InputError
        Missing or unreadable, a float map, several bands, a rotated geographic grid.
    """
    from geoseg.core.areas import pixel_area_m2
    from geoseg.io.raster import open_class_map

    text = os.fspath(path)
    source = open_class_map(text)
    try:
        info = source.info
        try:
            area = pixel_area_m2(info.crs_wkt, info.transform, info.height)
        except InputError as exc:
            raise InputError(f"class map {text}: {exc}") from None
        cmap = ClassMap(
            path=text,
            source=source,
            crs_wkt=info.crs_wkt,
            transform=info.transform,
            height=info.height,
            width=info.width,
            class_names=_class_names(source),
            nodata=info.nodata,
            extra_nodata=tuple(float(v) for v in nodata),
            pixel_area=area,
            area_method="planar" if isinstance(area, float) else "geodesic",
        )
        cmap.notes = _area_notes(cmap)
    except BaseException:
        source.close()
        raise
    return cmap


# --------------------------------------------------------------------------------------------
# Reading polygons (an AOI)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    """One polygon of an AOI, in the class map's CRS, named by its id or a field's value."""

    zone: int | str
    geometry: Any


def vector_files(path: PathLike | None) -> list[str]:
    """The files a vector dataset is made of: it, and the files sharing its stem (Shapefile).

    Listed as inputs of a command so that none of its outputs replaces part of its polygons.
    """
    if path is None or not os.fspath(path):
        return []
    p = Path(path)
    out = [os.fspath(p)]
    if p.is_file():
        out += sorted(os.fspath(q) for q in p.parent.glob(f"{p.stem}.*") if q != p)
    return out


def _read_layer(path: str, field_name: str | None) -> tuple[dict, np.ndarray, Any, list]:
    """Read the first layer with pyogrio (raw arrays), with one-line errors."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError

    from geoseg.io.raster import one_line

    fix = "pass polygons in a GeoPackage, GeoJSON, Shapefile or another OGR vector format"
    try:
        info = pyogrio.read_info(path)
        if field_name is not None and field_name not in list(info["fields"]):
            fields = ", ".join(map(str, info["fields"])) or "none"
            raise InputError(
                f"aoi_field {field_name} is not a field of {path} (fields: {fields}); "
                "name one of them",
                option="aoi_field",
            )
        columns = [] if field_name is None else [field_name]
        meta, fids, wkb, values = pyogrio.raw.read(path, columns=columns, return_fids=True)
    except (DataSourceError, DataLayerError, FieldError, GeometryError) as exc:
        reason = one_line(exc).split("; It might help")[0]  # GDAL's hint names drivers
        raise InputError(f"--aoi {path} is not a readable vector file ({reason}); {fix}") from None
    if meta.get("geometry_type") is None or wkb is None:
        raise InputError(f"--aoi {path} has no geometries (a table without shapes); {fix}")
    if len(fids) == 0:
        raise InputError(f"--aoi {path} holds no features; pass a file with polygons")
    return meta, fids, wkb, values


def _polygons(path: str, fids: np.ndarray, wkb: Any, labels: Sequence[Any]) -> list[Zone]:
    """Parse the geometries; refuse a feature without one or of a type that has no area."""
    import shapely

    geoms = shapely.force_2d(shapely.from_wkb(wkb))
    zones = []
    for fid, label, geom in zip(fids.tolist(), labels, geoms, strict=True):
        if geom is None:
            raise InputError(
                f"--aoi {path}: feature {fid} has no geometry; give it a polygon or drop it"
            )
        kind = geom.geom_type
        if kind not in POLYGON_TYPES:
            raise InputError(
                f"--aoi {path}: feature {fid} is a {kind}; statistics need areas: pass "
                "Polygon or MultiPolygon features (buffer points and lines first, or drop them)"
            )
        zones.append(Zone(label if label is not None else fid, geom))
    return zones


def _reproject(geoms: list[Any], src: Any, dst: str, path: str) -> list[Any]:
    """The geometries' vertices transformed from ``src`` to ``dst`` (x/y order).

    A vertex outside the target's domain becomes infinite: refused rather than rasterized.
    """
    import shapely
    from pyproj import CRS, Transformer

    source, target = CRS.from_user_input(src), CRS.from_wkt(dst)
    if source.equals(target, ignore_axis_order=True):
        return geoms
    transformer = Transformer.from_crs(source, target, always_xy=True)

    def forward(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    out = shapely.transform(np.asarray(geoms, dtype=object), forward)
    bounds = shapely.bounds(out)
    if not np.isfinite(bounds[~np.isnan(bounds).all(axis=1)]).all():  # empty ones are NaN
        raise InputError(
            f"--aoi {path}: polygons in {src} cannot be reprojected to the class map's "
            f"{_crs_label(dst)} (outside its domain); clip them to the map's area"
        )
    return list(out)


def read_aoi(
    path: PathLike,
    crs_wkt: str | None,
    field_name: str | None = None,
    map_path: str = "the class map",
) -> tuple[list[Zone], list[str]]:
    """Read polygons from any OGR vector file, in the class map's CRS.

    Parameters
    ----------
    path : path-like
        GeoPackage, GeoJSON, Shapefile, FlatGeobuf... (its first layer).
    crs_wkt : str or None
        The class map's CRS.
    field_name : str, optional
        A field whose values name the zones (default: the feature ids).
    map_path : str
        The class map, for messages.

    Returns
    -------
    (list of Zone, list of str)
        The polygons and notes (a CRS assumed, layers skipped).
    """
    import pyogrio

    from geoseg.io.raster import check_input_file

    text = os.fspath(path)
    try:
        check_input_file(text, "--aoi", folder_ok=True)
    except InputError as exc:  # its words are a raster's
        raise InputError(str(exc).replace("a raster file", "a vector file")) from None
    meta, fids, wkb, values = _read_layer(text, field_name)
    labels = values[0].tolist() if field_name is not None else [None] * len(fids)
    zones = _polygons(text, fids, wkb, labels)
    notes = []
    layers = pyogrio.list_layers(text)
    if len(layers) > 1:
        notes.append(f"--aoi {text} has {len(layers)} layers; read the first, {layers[0][0]}")
    src = meta.get("crs")
    if src is None:
        where = _crs_label(crs_wkt) or "map coordinates"
        notes.append(f"--aoi {text} has no CRS: its polygons are taken to be in {where}")
        return zones, notes
    if crs_wkt is None:
        raise InputError(
            f"{map_path} has no CRS, so --aoi {text} ({src}) cannot be placed on it; give it a "
            "CRS (gdal_edit -a_srs) or pass polygons in its map coordinates without a CRS"
        )
    geoms = _reproject([z.geometry for z in zones], src, crs_wkt, text)
    return [Zone(z.zone, g) for z, g in zip(zones, geoms, strict=True)], notes


# --------------------------------------------------------------------------------------------
# Counting a map: blocks of windows
# --------------------------------------------------------------------------------------------


def _blocks(row: int, col: int, height: int, width: int, size: int) -> Iterator[tuple]:
    """``(row, col, height, width)`` blocks of a window, row-major."""
    from tilers.grid import blocks

    for b in blocks(height, width, size):
        yield row + b.row, col + b.col, b.height, b.width


def polygon_window(
    geom: Any, transform: Sequence[float], shape: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The pixel window ``(row, col, height, width)`` holding every pixel centre in ``geom``.

    None when it holds none of the map's pixels (outside the map, or an empty polygon).
    """
    from affine import Affine

    if geom.is_empty:
        return None
    inv = ~Affine(*tuple(transform)[:6])
    x0, y0, x1, y1 = geom.bounds
    cols, rows = zip(*(inv @ (x, y) for x in (x0, x1) for y in (y0, y1)), strict=True)
    r0, c0 = max(math.floor(min(rows)), 0), max(math.floor(min(cols)), 0)
    r1, c1 = min(math.ceil(max(rows)), shape[0]), min(math.ceil(max(cols)), shape[1])
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, c0, r1 - r0, c1 - c0


def _inside(geom: Any, transform: Sequence[float], block: tuple) -> np.ndarray:
    """Pixels of ``block`` whose centres lie in ``geom`` (GDAL's rasterization rule)."""
    from affine import Affine
    from rasterio.features import geometry_mask

    row, col, height, width = block
    t = Affine(*tuple(transform)[:6]) @ Affine.translation(col, row)
    return geometry_mask(
        [geom], out_shape=(height, width), transform=t, invert=True, all_touched=False
    )


def tally_window(
    cmap: ClassMap,
    window: tuple[int, int, int, int],
    block_size: int = 2048,
    geometry: Any = None,
    step: Callable[[], None] | None = None,
) -> ClassTally:
    """Count a window of the map block by block, only the pixels in ``geometry`` if given.

    Blocks with no pixel centre in the polygon are not read at all.
    """
    tally = ClassTally()
    for block in _blocks(*window, block_size):
        where = None if geometry is None else _inside(geometry, cmap.transform, block)
        if where is None or where.any():
            ids, valid = cmap.read_ids(*block)
            tally.add(ids, valid, cmap.block_area(block[0], block[2]), where)
        if step is not None:
            step()
    return tally


def _footprint(cmap: ClassMap) -> Any:
    """The map's outline as a polygon in its CRS (its four corners: any affine grid)."""
    import shapely
    from affine import Affine

    t = Affine(*cmap.transform[:6])
    corners = [(0, 0), (cmap.width, 0), (cmap.width, cmap.height), (0, cmap.height)]
    return shapely.Polygon([t @ c for c in corners])


def _windows(cmap: ClassMap, zones: list[Zone] | None) -> list[tuple | None]:
    """The pixel window of each zone (the whole map without an AOI; None: outside the map)."""
    if zones is None:
        return [(0, 0, cmap.height, cmap.width)]
    import shapely

    footprint = _footprint(cmap)
    meets = shapely.intersects(np.asarray([z.geometry for z in zones], dtype=object), footprint)
    shape = (cmap.height, cmap.width)
    return [
        polygon_window(z.geometry, cmap.transform, shape) if m else None
        for z, m in zip(zones, meets.tolist(), strict=True)
    ]


def _check_overlap(cmap: ClassMap, zones: list[Zone], windows: list, aoi: str) -> list[str]:
    """Refuse an AOI none of whose polygons meets the map; note the polygons outside it."""
    outside = [z.zone for z, w in zip(zones, windows, strict=True) if w is None]
    if not outside:
        return []
    if len(outside) < len(zones):
        more = "..." if len(outside) > 5 else ""
        return [
            f"{len(outside)} polygon(s) of --aoi {aoi} lie outside the class map (zones "
            f"{', '.join(map(str, outside[:5]))}{more}): their counts are zero"
        ]
    x0, y0, x1, y1 = _footprint(cmap).bounds
    raise InputError(
        f"--aoi {aoi}: none of its {len(zones)} polygon(s) overlaps the class map {cmap.path} "
        f"(bounds {x0:.10g}, {y0:.10g}, {x1:.10g}, {y1:.10g} in "
        f"{_crs_label(cmap.crs_wkt) or 'map units'}); check the polygons and their CRS"
    )


def _check_block_size(block_size: int) -> None:
    """Refuse a block that is empty or too large to hold in memory."""
    if not 1 <= block_size <= MAX_BLOCK:
        raise ConfigError(
            f"block_size {block_size} is outside 1..{MAX_BLOCK}; e.g. 2048", option="block_size"
        )


def class_stats(
    classmap: PathLike,
    aoi: PathLike | None = None,
    *,
    block_size: int = 2048,
    nodata: Sequence[float] = (),
    aoi_field: str | None = None,
    progress: Progress | None = None,
) -> StatsResult:
    """Per-class pixel counts, areas (m^2) and shares of a class map, whole or per polygon.

    Parameters
    ----------
    classmap : path-like
        One band of 8/16-bit class ids (GeoTIFF, COG, VRT, ``.zarr``).
    aoi : path-like, optional
        Polygons in any OGR format: one zone each, instead of the whole map.
    block_size : int
        Side of the square blocks read at a time; memory is bounded by one block (about
        40 bytes a pixel: ~170 MB at 2048), whatever the size of the map.
    nodata : sequence of float
        Ids not to count, besides the map's own nodata value and mask.
    aoi_field : str, optional
        A field of ``aoi`` that names the zones (default: feature ids).
    progress : callable, optional
        ``progress(done, total)`` after each block.

    Returns
    -------
    StatsResult
        Rows via :meth:`StatsResult.rows`; :meth:`~StatsResult.to_json`,
        :meth:`~StatsResult.to_csv` and :meth:`~StatsResult.table` to present them.
    """
    _check_block_size(block_size)
    cmap = open_classmap(classmap, nodata)
    try:
        notes = list(cmap.notes)
        zones = None
        if aoi is not None:
            zones, aoi_notes = read_aoi(aoi, cmap.crs_wkt, aoi_field, f"class map {cmap.path}")
            notes += aoi_notes
        windows = _windows(cmap, zones)
        if zones is not None:
            notes += _check_overlap(cmap, zones, windows, os.fspath(aoi))
        tallies = _tally_all(cmap, zones, windows, block_size, progress)
    finally:
        cmap.source.close()
    notes += _id_notes(cmap, tallies)
    labels = [None] if zones is None else [z.zone for z in zones]
    return StatsResult(
        classmap=cmap.path,
        crs=_crs_label(cmap.crs_wkt),
        area_method=cmap.area_method,
        class_names=cmap.class_names,
        nodata=cmap.nodata_values,
        zones=[ZoneStats(z, t) for z, t in zip(labels, tallies, strict=True)],
        notes=notes,
        aoi=None if aoi is None else os.fspath(aoi),
    )


def _id_notes(cmap: ClassMap, tallies: list[ClassTally]) -> list[str]:
    """Point at negative ids: not class ids, most likely an untagged nodata value."""
    negative = sorted({c for t in tallies for c in t.pixels if c < 0})
    if not negative:
        return []
    return [
        f"{cmap.path} holds negative ids {', '.join(map(str, negative[:5]))}, which are not "
        f"class ids; leave them out with --nodata {negative[0]} if they mark no-data"
    ]


def _tally_all(
    cmap: ClassMap,
    zones: list[Zone] | None,
    windows: list,
    block_size: int,
    progress: Progress | None,
) -> list[ClassTally]:
    """One tally per zone, with progress counted in blocks over all zones."""
    total = sum(-(-w[2] // block_size) * -(-w[3] // block_size) for w in windows if w is not None)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    tallies = []
    for i, window in enumerate(windows):
        if window is None:
            tallies.append(ClassTally())
            continue
        geom = None if zones is None else zones[i].geometry
        tallies.append(tally_window(cmap, window, block_size, geom, step))
    return tallies
