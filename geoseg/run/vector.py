"""Class maps to polygons, block by block, streamed to GeoPackage, FlatGeobuf, GeoJSON, Parquet.

A class map of any size is vectorized in bounded memory: it is read in square blocks
(``--block-size``, row-major, through :func:`geoseg.io.raster.open_raster`) and each block is
polygonized by ``rasterio.features.shapes`` (4-connectivity, in pixel coordinates, so every
vertex is an exact integer and unions are exact). The result is the same set of
``(class_id, polygon)`` as polygonizing the whole map at once.

Merging across block edges
--------------------------
Only polygons that touch an edge whose neighbouring block is still to come are kept open: the
*frontier* holds, for every pixel along the bottom row of the blocks done so far and along the
right column of the last block, the id of the open polygon covering it. When a block arrives,
the polygon under each pixel of its top row and left column is found (one point query per run
of equal pixels, at the pixel centre, which lies inside exactly one polygon); a pixel and its
frontier neighbour of the same class join their two polygons (4-connectivity: diagonal contact
joins nothing). Joined pieces are grouped with a union-find and unioned (``shapely.union_all``),
and every polygon that no frontier pixel refers to any longer is final: it is written out at
once. Open polygons are therefore at most those crossing one row of blocks, plus the polygons
that really span it (a polygon's own size cannot be bounded).

Outputs
-------
One layer, ``classes``, in the class map's CRS, with an integer ``class_id`` and a
``class_name`` (the class map's ``CLASS_NAMES`` tags via
:func:`geoseg.core.labels.class_names_from_tags`, else ``"class N"``); nodata pixels are left out.
Exterior rings are counter-clockwise and holes clockwise (the right-hand rule of RFC 7946).

- ``.gpkg``, ``.fgb``, ``.geojson`` are written by GDAL through ``pyogrio.raw.write_arrow`` from
  a stream of record batches, so features are written as they are finished.
- ``.geojson`` is written in the class map's CRS, as GDAL's GeoJSON driver does without
  ``RFC7946=YES``: it names the CRS in a (pre-RFC 7946) ``"crs"`` member, which it can only do by
  EPSG code; readers assume WGS 84 without one. A class map whose CRS has no EPSG code (or no
  CRS at all) is therefore refused for GeoJSON: write ``.gpkg``/``.fgb``/``.parquet`` instead.
- ``.parquet`` is GeoParquet 1.1 written with pyarrow (the GDAL bundled with pyogrio has no
  Parquet driver): a WKB ``geometry`` column, one row group per batch, and the ``geo`` metadata
  (CRS as PROJJSON, geometry types, bbox) added to the footer when the last batch is written.

Every output goes through :func:`geoseg.io.files.check_target` and is written inside a private
temporary folder beside the target (GDAL drivers create side files, journals and spatial-index
temporaries, next to the file they write: in a folder of our own none can land elsewhere, and
all are removed together), then renamed into place: a failed or interrupted run leaves nothing,
and an existing output is kept until the new one is complete.

``--overwrite`` replaces only a vector file geoseg wrote: a file of the same format whose one
layer is ``classes`` and carries the description ``"geoseg vectorize"`` (GDAL formats: layer
option ``DESCRIPTION``; GeoParquet: footer key ``geoseg``). Any other file is refused.

Simplification and minimum area
-------------------------------
``simplify`` applies ``shapely.simplify(preserve_topology=True)`` to each polygon on its own:
each stays valid, but the edge shared by two neighbours is simplified twice, differently, which
opens slivers (gaps and overlaps) between them. ``shapely.coverage_simplify`` would keep the
coverage, but only within one batch of polygons while streaming, so it would not keep it
either; per-polygon simplification is the honest, documented choice. ``min_area`` drops
polygons smaller than the threshold (measured before simplification): a plain number is in map
units (planar), ``500m2`` in square metres and ``0.5ha`` in hectares, both through
:func:`geoseg.core.areas.polygon_areas_m2` (geodesic on a geographic CRS).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ConfigError, InputError, OutputError
from geoseg.io.raster import IDENTITY, RasterSource, open_class_map

__all__ = [
    "FORMATS",
    "Block",
    "MinArea",
    "VectorSummary",
    "check_output",
    "classmap_blocks",
    "is_vector_output",
    "iter_polygons",
    "merge_blocks",
    "output_driver",
    "parse_min_area",
    "parse_tolerance",
    "vectorize",
]

LAYER = "classes"
MARKER = "geoseg vectorize"
FORMATS = {".gpkg": "GPKG", ".fgb": "FlatGeobuf", ".geojson": "GeoJSON", ".parquet": "Parquet"}
DEFAULT_BLOCK = 2048
# A block is read as float32 and held as int32 ids and a mask: ~9 bytes a pixel, 600 MB here.
MAX_BLOCK = 8192
BATCH = 8192  # polygons per record batch (and per GeoParquet row group)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Block:
    """One block of a class map: top-left pixel, class ids and where they are data.

    Attributes
    ----------
    row, col : int
        Top-left pixel of the block in the class map.
    ids : ndarray
        ``(h, w)`` int32 class ids (any value where ``valid`` is False).
    valid : ndarray
        ``(h, w)`` bool, False at nodata.
    """

    row: int
    col: int
    ids: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class MinArea:
    """A ``--min-area`` threshold: ``value`` in map units (``unit="map"``) or in ``"m2"``."""

    value: float
    unit: str
    text: str


@dataclass(frozen=True)
class VectorSummary:
    """What :func:`vectorize` wrote.

    Attributes
    ----------
    path : str
        The output file.
    driver : str
        ``"GPKG"``, ``"FlatGeobuf"``, ``"GeoJSON"`` or ``"Parquet"``.
    polygons : int
        Polygons written.
    classes : dict of int to int
        Polygons written per class id.
    pixels : int
        Class pixels (not nodata) vectorized.
    dropped : int
        Polygons left out by ``min_area``.
    """

    path: str
    driver: str
    polygons: int
    classes: dict[int, int]
    pixels: int
    dropped: int = 0


# --------------------------------------------------------------------------------------------
# Option values
# --------------------------------------------------------------------------------------------

_AREA = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(m2|ha)?\s*$", re.IGNORECASE)


def parse_min_area(value: str | float | MinArea | None) -> MinArea | None:
    """Parse ``min_area``: ``25`` (map units), ``500m2`` (square metres) or ``0.5ha``.

    Raises
    ------
    ConfigError
        Not a non-negative finite number with an optional ``m2``/``ha`` suffix.
    """
    if value is None or isinstance(value, MinArea):
        return value
    text = str(value)
    match = _AREA.match(text)
    number = float(match.group(1)) if match else math.nan
    if not math.isfinite(number):
        raise ConfigError(
            f"min_area {text!r} is not an area; give map units (25), square metres (500m2) "
            "or hectares (0.5ha)",
            option="min_area",
        )
    unit = (match.group(2) or "").lower()
    if unit == "ha":
        return MinArea(number * 10_000.0, "m2", text)
    return MinArea(number, "m2" if unit == "m2" else "map", text)


def parse_tolerance(value: str | float | None) -> float | None:
    """Parse ``simplify``: a finite tolerance >= 0 in map units (0 or None: no simplification).

    Raises
    ------
    ConfigError
        Not a number, negative, NaN or infinite.
    """
    if value is None:
        return None
    try:
        tolerance = float(value)
    except (TypeError, ValueError):
        tolerance = math.nan
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(
            f"simplify {value!r} is not a tolerance; give a distance >= 0 in the class map's "
            "units, e.g. 2.5",
            option="simplify",
        )
    return tolerance or None


def output_driver(path: str | os.PathLike[str]) -> str:
    """The format of an output path, by its extension (:data:`FORMATS`).

    Raises
    ------
    ConfigError
        Any other extension.
    """
    ext = Path(os.fspath(path)).suffix.lower()
    if ext not in FORMATS:
        raise ConfigError(
            f"OUT {os.fspath(path)} has an unknown extension {repr(ext) if ext else '(none)'}; "
            f"end it with {', '.join(FORMATS)}"
        )
    return FORMATS[ext]


def check_block_size(block_size: int) -> int:
    """Refuse a ``block_size`` outside 1..:data:`MAX_BLOCK` (memory of one block)."""
    if not 1 <= int(block_size) <= MAX_BLOCK:
        raise ConfigError(
            f"block_size {block_size} is outside 1..{MAX_BLOCK} pixels; e.g. {DEFAULT_BLOCK}",
            option="block_size",
        )
    return int(block_size)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def classmap_blocks(source: RasterSource, block_size: int = DEFAULT_BLOCK) -> Iterator[Block]:
    """Read ``source`` block by block, row-major, as :class:`Block` (nodata: ``valid`` False).

    The reader returns float32, exact for the 16-bit ids a class map holds.
    """
    from tilers.grid import blocks

    info = source.info
    for win in blocks(info.height, info.width, block_size):
        data, valid = source.read(win.row, win.col, win.height, win.width)
        ids = np.where(valid, np.rint(data[0]), 0).astype(np.int32)
        yield Block(win.row, win.col, ids, valid)


# --------------------------------------------------------------------------------------------
# The merge
# --------------------------------------------------------------------------------------------


def _block_shapes(block: Block) -> tuple[np.ndarray, np.ndarray]:
    """Polygons of one block in pixel coordinates of the whole map, and their class ids.

    The rings are gathered into one ragged array and built in one call: building each
    polygon from its GeoJSON-like mapping (``shapely.geometry.shape``) costs 4x polygonizing.
    """
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    if not block.valid.any():
        return _objects([]), np.empty(0, np.int64)
    classes, ring_counts, ring_sizes, coords = [], [], [], []
    transform = Affine.translation(block.col, block.row)
    for geom, value in shapes(block.ids, block.valid, connectivity=4, transform=transform):
        rings = geom["coordinates"]
        classes.append(int(value))
        ring_counts.append(len(rings))
        for ring in rings:
            ring_sizes.append(len(ring))
            coords.extend(ring)
    offsets = (np.cumsum([0, *ring_sizes]), np.cumsum([0, *ring_counts]))
    xy = np.asarray(coords, np.float64).reshape(-1, 2)
    geoms = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, offsets)
    return geoms, np.asarray(classes, np.int64)


def _edge_ids(tree: Any, ids: np.ndarray, valid: np.ndarray, xs, ys, base: int) -> np.ndarray:
    """The (global) id of the polygon covering each pixel of one edge line of a block, or -1.

    One point query per run of equal pixels, at a pixel centre: it lies strictly inside exactly
    one polygon, and a run of equal 4-connected pixels belongs to a single polygon.
    """
    import shapely

    n = len(ids)
    starts = np.flatnonzero(np.r_[True, (ids[1:] != ids[:-1]) | (valid[1:] != valid[:-1])])
    run_of = np.cumsum(np.isin(np.arange(n), starts)) - 1
    run_poly = np.full(len(starts), -1, np.int64)
    keep = np.flatnonzero(valid[starts])
    if tree is not None and len(keep):
        at = starts[keep]
        points = shapely.points(np.broadcast_to(xs, n)[at], np.broadcast_to(ys, n)[at])
        point_i, poly_i = tree.query(points, predicate="within")
        if len(point_i) != len(keep):
            raise RuntimeError("a pixel centre lies in no or several polygons of its block")
        run_poly[keep[point_i]] = poly_i + base
    return run_poly[run_of]


def _links(old: np.ndarray, old_cls: np.ndarray, new: np.ndarray, new_cls) -> np.ndarray:
    """Pairs (open id, new id) of 4-neighbours across an edge that hold the same class."""
    same = (old >= 0) & (new >= 0) & (old_cls == new_cls)
    return np.stack([old[same], new[same]], axis=1)


@dataclass
class _Frontier:
    """Open polygons and the ids along the edges still to be matched (see the module doc)."""

    height: int
    width: int
    bottom: np.ndarray = field(init=False)
    bottom_cls: np.ndarray = field(init=False)
    right: np.ndarray = field(init=False)
    right_cls: np.ndarray = field(init=False)
    open: dict[int, tuple[int, Any]] = field(default_factory=dict)
    refs: dict[int, int] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    next_id: int = 0
    expect: tuple[int, int, int] = (0, 0, 0)  # next block's row, col, and the strip's height

    def __post_init__(self) -> None:
        self.bottom = np.full(self.width, -1, np.int64)
        self.bottom_cls = np.zeros(self.width, np.int64)
        self.right = self.right_cls = np.empty(0, np.int64)

    def find(self, i: int) -> int:
        """The root id of ``i``'s group (union-find with path halving)."""
        parent = self.parent
        while parent.get(i, i) != i:
            parent[i] = parent.get(parent[i], parent[i])
            i = parent[i]
        return i

    def resolve(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` with each merged id replaced by its group's root."""
        if not self.parent or not len(ids):
            return ids.copy()
        uniq, inverse = np.unique(ids, return_inverse=True)
        roots = np.array([self.find(u) if u >= 0 else -1 for u in uniq.tolist()], np.int64)
        return roots[inverse.reshape(-1)]

    def count(self, ids: np.ndarray, sign: int) -> None:
        """Add (or remove) frontier references to the (root) ids ``ids``."""
        uniq, n = np.unique(ids[ids >= 0], return_counts=True)
        for u, k in zip(uniq.tolist(), n.tolist(), strict=True):
            self.refs[u] = self.refs.get(u, 0) + sign * k

    def check_order(self, block: Block) -> tuple[bool, bool]:
        """Refuse blocks out of row-major order; return (last row?, last column?)."""
        h, w = block.ids.shape
        row, col, strip = self.expect
        ok = (block.row, block.col) == (row, col) and block.valid.shape == (h, w)
        ok = ok and (col == 0 or h == strip) and row + h <= self.height and col + w <= self.width
        if not ok or h == 0 or w == 0:
            raise InputError(
                f"block at row {block.row}, col {block.col} ({h}x{w}) is out of order; expected "
                f"row-major blocks starting at row {row}, col {col} of a {self.height}x"
                f"{self.width} map"
            )
        last_col = col + w == self.width
        self.expect = (row + h, 0, 0) if last_col else (row, col + w, h)
        return row + h == self.height, last_col

    def merge(self, pairs: np.ndarray) -> None:
        """Union the polygons that ``pairs`` join (their pieces become one open polygon)."""
        import shapely

        for a, b in pairs.tolist():
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self.parent[max(ra, rb)] = min(ra, rb)
        groups: dict[int, list[int]] = {}
        for i in np.unique(pairs).tolist():
            groups.setdefault(self.find(i), []).append(i)
        for root, members in groups.items():
            parts = [self.open.pop(m) for m in members]
            refs = sum(self.refs.pop(m, 0) for m in members)
            self.open[root] = (parts[0][0], shapely.union_all([g for _, g in parts]))
            if refs:
                self.refs[root] = refs

    def add(self, block: Block) -> list[tuple[int, Any]]:
        """Take the next block; return the polygons (pixel coordinates) it made final."""
        import shapely

        last_row, last_col = self.check_order(block)
        h, w = block.ids.shape
        r, c = block.row, block.col
        geoms, classes = _block_shapes(block)
        base, self.next_id = self.next_id, self.next_id + len(geoms)
        pieces = zip(classes.tolist(), geoms, strict=True)
        self.open.update(zip(range(base, base + len(geoms)), pieces, strict=True))
        tree = shapely.STRtree(geoms) if len(geoms) else None
        xs, ys = c + 0.5 + np.arange(w), r + 0.5 + np.arange(h)
        old, links = [], []
        if r > 0:
            top = _edge_ids(tree, block.ids[0], block.valid[0], xs, r + 0.5, base)
            old.append(self.resolve(self.bottom[c : c + w]))
            links.append(_links(old[-1], self.bottom_cls[c : c + w], top, block.ids[0]))
        if c > 0:
            left = _edge_ids(tree, block.ids[:, 0], block.valid[:, 0], c + 0.5, ys, base)
            old.append(self.resolve(self.right))
            links.append(_links(old[-1], self.right_cls, left, block.ids[:, 0]))
        for cells in old:
            self.count(cells, -1)
        pairs = np.unique(np.concatenate(links), axis=0) if links else np.empty((0, 2), int)
        self.merge(pairs)
        touched = [np.arange(base, base + len(geoms)), *old]
        candidates = set(self.resolve(np.concatenate(touched)).tolist()) - {-1}
        self._advance(block, tree, base, xs, ys, last_row, last_col)
        return [self.open.pop(i) for i in sorted(candidates) if not self.refs.get(i)]

    def _advance(self, block, tree, base, xs, ys, last_row: bool, last_col: bool) -> None:
        """Write the block's bottom row and right column into the frontier."""
        h, w = block.ids.shape
        r, c = block.row, block.col
        if last_row:
            self.bottom[c : c + w] = -1
        else:
            bottom = _edge_ids(tree, block.ids[-1], block.valid[-1], xs, r + h - 0.5, base)
            self.bottom[c : c + w] = self.resolve(bottom)
            self.bottom_cls[c : c + w] = block.ids[-1]
            self.count(self.bottom[c : c + w], +1)
        if last_col:
            self.right = self.right_cls = np.empty(0, np.int64)
            self.bottom = self.resolve(self.bottom)  # every cell a root: the history can go
            self.parent.clear()
        else:
            right = _edge_ids(tree, block.ids[:, -1], block.valid[:, -1], c + w - 0.5, ys, base)
            self.right, self.right_cls = self.resolve(right), block.ids[:, -1].astype(np.int64)
            self.count(self.right, +1)


def merge_blocks(blocks: Iterable[Block], height: int, width: int) -> Iterator[tuple[int, Any]]:
    """Polygonize a class map from its blocks: ``(class_id, polygon)`` in pixel coordinates.

    Parameters
    ----------
    blocks : iterable of Block
        The blocks of a ``height`` x ``width`` map in row-major order, one row of blocks of
        the same height at a time (as :func:`tilers.grid.blocks` lists them).
    height, width : int
        The class map's size.

    Yields
    ------
    (int, shapely.Polygon)
        Each polygon as soon as it is final; together the same as ``rasterio.features.shapes``
        (connectivity 4) over the whole map with its nodata masked.
    """
    frontier = _Frontier(height, width)
    for block in blocks:
        yield from frontier.add(block)
    if frontier.expect[:2] != (height, 0) or frontier.open:
        raise InputError(
            f"the blocks cover the {height}x{width} map only up to row {frontier.expect[0]}, "
            f"col {frontier.expect[1]}; pass all its blocks"
        )


def to_map(geoms: np.ndarray, transform: tuple[float, ...]) -> np.ndarray:
    """Pixel-coordinate geometries in map coordinates (``x = c + col * a + row * b``...).

    The terms are added in the order GDAL's polygonize uses, so the vertices are the same.
    """
    import shapely

    a, b, c, d, e, f = (float(v) for v in transform[:6])
    if (a, b, c, d, e, f) == IDENTITY:
        return geoms

    def affine(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([c + x * a + y * b, f + x * d + y * e])

    return shapely.transform(geoms, affine)


def iter_polygons(
    blocks: Iterable[Block],
    height: int,
    width: int,
    transform: tuple[float, ...] = IDENTITY,
    batch: int = BATCH,
) -> Iterator[tuple[int, Any]]:
    """:func:`merge_blocks` in map coordinates: ``(class_id, polygon)`` as they are final.

    For reuse by any producer of class blocks (``geoseg predict --vector``); ``transform`` is
    the class map's affine ``(a, b, c, d, e, f)``. Polygons are transformed in batches.
    """
    for classes, geoms in _batches(merge_blocks(blocks, height, width), transform, batch):
        yield from zip(classes.tolist(), geoms.tolist(), strict=True)


def _batches(
    polygons: Iterable[tuple[int, Any]], transform: tuple[float, ...], size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Group polygons into arrays of up to ``size`` (class ids, geometries in map units)."""
    classes: list[int] = []
    geoms: list[Any] = []
    for k, geom in polygons:
        classes.append(k)
        geoms.append(geom)
        if len(geoms) >= size:
            yield np.asarray(classes, np.int64), to_map(_objects(geoms), transform)
            classes, geoms = [], []
    if geoms:
        yield np.asarray(classes, np.int64), to_map(_objects(geoms), transform)


def _objects(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@dataclass
class _Counter:
    """Running totals of what is written, and the extent (for the GeoParquet bbox)."""

    polygons: int = 0
    dropped: int = 0
    pixels: int = 0
    classes: dict[int, int] = field(default_factory=dict)
    bbox: list[float] = field(default_factory=lambda: [math.inf, math.inf, -math.inf, -math.inf])


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("class_id", pa.int32(), nullable=False),
            pa.field("class_name", pa.string(), nullable=False),
            pa.field("geometry", pa.binary(), nullable=False),
        ]
    )


def _keep(geoms: np.ndarray, min_area: MinArea | None, crs_wkt: str | None) -> np.ndarray:
    """Which polygons are at least ``min_area`` (map units, or m^2 via geoseg.core.areas)."""
    import shapely

    if min_area is None:
        return np.ones(len(geoms), bool)
    if min_area.unit == "map":
        return shapely.area(geoms) >= min_area.value
    from geoseg.core.areas import polygon_areas_m2

    return polygon_areas_m2(geoms, crs_wkt) >= min_area.value


def _records(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    names: list[str],
    *,
    simplify: float | None,
    min_area: MinArea | None,
    crs_wkt: str | None,
    counter: _Counter,
) -> Iterator[Any]:
    """Filter, simplify, orient and encode batches of polygons as Arrow record batches."""
    import pyarrow as pa
    import shapely

    for classes, geoms in batches:
        keep = _keep(geoms, min_area, crs_wkt)
        counter.dropped += int((~keep).sum())
        classes, geoms = classes[keep], geoms[keep]
        if not len(geoms):
            continue
        if simplify:
            geoms = shapely.simplify(geoms, simplify, preserve_topology=True)
        geoms = shapely.orient_polygons(geoms)
        bounds = shapely.bounds(geoms)
        box = counter.bbox
        low, high = (
            np.minimum(box[:2], bounds[:, :2].min(0)),
            np.maximum(box[2:], bounds[:, 2:].max(0)),
        )
        counter.bbox = [*low.tolist(), *high.tolist()]
        counter.polygons += len(geoms)
        for k, n in zip(*np.unique(classes, return_counts=True), strict=True):
            counter.classes[int(k)] = counter.classes.get(int(k), 0) + int(n)
        labels = [names[k] if 0 <= k < len(names) else f"class {k}" for k in classes.tolist()]
        yield pa.record_batch(
            [
                pa.array(classes, pa.int32()),
                pa.array(labels, pa.string()),
                pa.array(shapely.to_wkb(geoms), pa.binary()),
            ],
            schema=_schema(),
        )


class _Capture:
    """Iterate ``items``, keeping the exception that stopped it.

    GDAL and Arrow consume the batches from C and report a failed batch as a generic
    ``RuntimeError``; the real error (a truncated class map, Ctrl-C) is re-raised from here.
    """

    def __init__(self, items: Iterable[Any]) -> None:
        self.items, self.error = items, None

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self.items
        except BaseException as exc:
            self.error = exc
            raise


def _write_gdal(path: Path, driver: str, records: Iterable[Any], crs_wkt: str | None) -> None:
    import pyarrow as pa
    import pyogrio.raw

    reader = pa.RecordBatchReader.from_batches(_schema(), iter(records))
    with warnings.catch_warnings():
        # a class map without a CRS (a local pixel grid) gives a layer without one, as it should
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        pyogrio.raw.write_arrow(
            reader,
            path,
            layer=LAYER,
            driver=driver,
            geometry_name="geometry",
            geometry_type="Polygon",
            crs=crs_wkt,
            layer_options={"DESCRIPTION": MARKER},
        )


def geo_metadata(crs_wkt: str | None, counter: _Counter) -> dict[str, Any]:
    """The GeoParquet 1.1 ``geo`` metadata of the written polygons."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"] if counter.polygons else [],
        "orientation": "counterclockwise",
    }
    if crs_wkt:
        from pyproj import CRS

        column["crs"] = CRS.from_wkt(crs_wkt).to_json_dict()
    else:
        column["crs"] = None  # explicitly unknown (absent would mean OGC:CRS84)
    if counter.polygons:
        column["bbox"] = counter.bbox
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def _write_parquet(path: Path, records: Iterable[Any], crs_wkt: str | None, counter) -> None:
    import pyarrow.parquet as pq

    # Without the Arrow schema blob, readers take the schema metadata from the footer's
    # key-value metadata, where ``geo`` (with the bbox, known only at the end) is added last.
    with pq.ParquetWriter(path, _schema(), compression="zstd", store_schema=False) as writer:
        for batch in records:
            writer.write_batch(batch)  # one row group per batch
        meta = {"geo": json.dumps(geo_metadata(crs_wkt, counter)), "geoseg": MARKER}
        writer.add_key_value_metadata(meta)


def is_vector_output(path: str | os.PathLike[str], driver: str) -> bool:
    """True for a file geoseg's vectorize wrote in ``driver``'s format (see the module doc)."""
    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return False
    if driver == "Parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(p).metadata or {}
        except (OSError, pa.ArrowException):
            return False
        return meta.get(b"geoseg") == MARKER.encode() and b"geo" in meta
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        layers = pyogrio.list_layers(p)
        info = pyogrio.read_info(p, layer=LAYER)
    except (DataSourceError, DataLayerError, OSError, ValueError):
        return False
    described = (info.get("layer_metadata") or {}).get("DESCRIPTION") == MARKER
    return info.get("driver") == driver and len(layers) == 1 and described


def _check_crs(info: Any, driver: str, min_area: MinArea | None, path: str) -> None:
    """Refuse GeoJSON for a CRS it cannot name, and square metres without a CRS."""
    if driver == "GeoJSON":
        authority = None
        if info.crs_wkt:
            from pyproj import CRS

            authority = CRS.from_wkt(info.crs_wkt).to_authority(min_confidence=100)
        if not authority or authority[0] != "EPSG":
            what = "a CRS without an EPSG code" if info.crs_wkt else "no CRS"
            raise ConfigError(
                f"class map {path} has {what}, which GeoJSON cannot record (readers would "
                "assume WGS 84); write OUT as .gpkg, .fgb or .parquet"
            )
    if min_area is not None and min_area.unit == "m2" and not info.crs_wkt:
        raise ConfigError(
            f"min_area {min_area.text} is in square metres but class map {path} has no CRS; "
            f"give the area in map units, e.g. {min_area.value:g}",
            option="min_area",
        )


def _counted_blocks(
    source: RasterSource, block_size: int, progress: Progress | None, counter: _Counter
) -> Iterator[Block]:
    """:func:`classmap_blocks`, counting data pixels and reporting blocks done."""
    info = source.info
    total = math.ceil(info.height / block_size) * math.ceil(info.width / block_size)
    for done, block in enumerate(classmap_blocks(source, block_size), 1):
        counter.pixels += int(np.count_nonzero(block.valid))
        yield block
        if progress is not None:
            progress(done, total)


def _write_atomic(
    target: Path, driver: str, records: Iterable[Any], crs_wkt: str | None, counter: _Counter
) -> None:
    """Write into a private folder beside ``target``, then rename the file into place."""
    from geoseg.io.files import fsync_path, install, remove_ours, temp_dir
    from geoseg.io.raster import one_line

    folder = temp_dir(target)
    tmp = folder / target.name
    capture = _Capture(records)
    try:
        try:
            if driver == "Parquet":
                _write_parquet(tmp, capture, crs_wkt, counter)
            else:
                _write_gdal(tmp, driver, capture, crs_wkt)
        except Exception as exc:
            if capture.error is not None:
                raise capture.error from None
            raise OutputError(
                f"cannot write OUT {target} ({one_line(exc)}); check free disk space and "
                "permissions"
            ) from None
        if capture.error is not None:
            raise capture.error
        fsync_path(tmp)
        install(tmp, target)
    finally:
        remove_ours(folder)


def vectorize(
    classmap: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    simplify: float | str | None = None,
    min_area: float | str | MinArea | None = None,
    block_size: int = DEFAULT_BLOCK,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> VectorSummary:
    """Turn a class map into one polygon layer, block by block, in bounded memory.

    Parameters
    ----------
    classmap : path-like
        A single-band integer class map (GeoTIFF, COG, VRT, ``.zarr``...); nodata is left out.
    out : path-like
        ``.gpkg``, ``.fgb``, ``.geojson`` or ``.parquet`` (GeoParquet).
    simplify : float or str, optional
        Tolerance in map units for per-polygon ``preserve_topology`` simplification (may open
        slivers between neighbours, see the module doc).
    min_area : float, str or MinArea, optional
        Drop smaller polygons: map units (``25``), square metres (``"500m2"``) or ``"0.5ha"``.
    block_size : int
        Side of the square blocks read at a time (memory ~9 bytes per block pixel).
    overwrite : bool
        Replace an existing ``out`` that geoseg's vectorize wrote (never another file).
    progress : callable, optional
        ``progress(blocks_done, blocks_total)``.

    Returns
    -------
    VectorSummary

    Raises
    ------
    ConfigError, InputError, OutputExistsError, OutputError
        Bad option values or extension, GeoJSON for a CRS without an EPSG code, an unusable
        class map, and whatever :func:`check_output` refuses.
    """
    from geoseg.core.labels import class_names_from_tags

    target, driver = check_output(classmap, out, overwrite)
    tolerance, area = parse_tolerance(simplify), parse_min_area(min_area)
    block_size = check_block_size(block_size)
    with open_class_map(classmap) as source:
        info = source.info
        _check_crs(info, driver, area, os.fspath(classmap))
        names = class_names_from_tags(source.tags()) or []
        counter = _Counter()
        blocks = _counted_blocks(source, block_size, progress, counter)
        batches = _batches(merge_blocks(blocks, info.height, info.width), info.transform, BATCH)
        kw = {"simplify": tolerance, "min_area": area, "crs_wkt": info.crs_wkt}
        records = _records(batches, names, counter=counter, **kw)
        _write_atomic(target, driver, records, info.crs_wkt, counter)
    classes = dict(sorted(counter.classes.items()))
    return VectorSummary(
        os.fspath(target), driver, counter.polygons, classes, counter.pixels, counter.dropped
    )


def check_output(
    classmap: str | os.PathLike[str],
    out: str | os.PathLike[str],
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> tuple[Path, str]:
    """The output guard, before any work: return the target path and its format's driver.

    ``out`` may be none of the class map's files nor of ``inputs`` (``predict --vector``:
    the raster, model and config predict reads, and the class map files it writes).

    Raises
    ------
    InputError, OutputError, OutputExistsError
        From :func:`geoseg.io.files.check_target`; and an existing ``out`` that geoseg's
        vectorize did not write (:func:`is_vector_output`), even with ``overwrite``.
    ConfigError
        An unknown extension.
    """
    from geoseg.io.files import check_target
    from geoseg.io.raster import raster_files

    read = [*raster_files(classmap), *inputs]
    target = check_target(out, overwrite=overwrite, inputs=read, what="OUT")
    driver = output_driver(out)
    if target.exists() and not is_vector_output(target, driver):
        raise OutputError(
            f"OUT {target} exists and is not a {driver} file geoseg vectorize wrote; "
            "--overwrite only replaces geoseg's own outputs: remove it yourself or choose "
            "another path"
        )
    return target, driver
