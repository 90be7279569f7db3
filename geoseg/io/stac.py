"""STAC inputs: a STAC item's assets stacked into one raster, read like any other input.

``geoseg predict ITEM.json OUT --assets red,green,blue`` resolves the named assets (asset keys,
else ``eo:bands`` common names or band names), checks that they share one grid (CRS,
transform, size), and writes a VRT that stacks their bands, in the order given, into an
exclusive temporary folder (never beside the inputs, which are never written). The item's
``raster:bands`` scale and offset become the input's scaling (``--scale``/``--offset`` given
explicitly win). Asset hrefs relative to the item file resolve relative to it.

An item collection (a STAC API search result) is a batch: ``FILE#ITEM_ID`` names one of its
items, and ``--output-dir`` predicts each item (``{stem}`` is the item id).
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import AlignmentError, ConfigError, InputError
from geoseg.io.raster import GdalSource, RasterSource, is_gdal_url, one_line, vsi_path
from tilers.grid import Window

__all__ = [
    "StacSource",
    "is_stac_path",
    "item_inputs",
    "open_item",
    "split_item",
    "stac_data_files",
    "stac_files",
]

STAC_SUFFIXES = (".json", ".geojson")
MAX_STAC_BYTES = 64 * 2**20  # a search result of thousands of items is a few MiB
# numpy dtype -> GDAL type name of the VRT bands (assets of several dtypes share the widest)
GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}
NOT_RASTER_ROLES = {"thumbnail", "metadata"}
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")


def split_item(path: str) -> tuple[str, str | None]:
    """``FILE#ITEM_ID`` split into the STAC file and the item id (None when not given)."""
    file, sep, item_id = path.rpartition("#")
    if sep and file.lower().endswith(STAC_SUFFIXES):
        return file, item_id
    return path, None


def is_stac_path(path: str | os.PathLike[str] | None) -> bool:
    """True for a STAC item or item collection file or URL (``.json``, maybe ``#ITEM_ID``)."""
    if path is None:
        return False
    return split_item(os.fspath(path))[0].lower().endswith(STAC_SUFFIXES)


# --------------------------------------------------------------------------------------------
# Reading items
# --------------------------------------------------------------------------------------------


def _read_text(file: str) -> str:
    """The text of a local or remote STAC file (a FIFO or a huge file refused)."""
    if is_gdal_url(file) or "://" in file:
        import pystac

        url = file.removeprefix("/vsicurl/")  # pystac reads http(s) URLs itself
        try:
            return pystac.StacIO.default().read_text(url)
        except Exception as exc:  # noqa: BLE001 - urllib, HTTP and decoding errors alike
            raise InputError(
                f"cannot read STAC file {file} ({one_line(exc)}); check the URL"
            ) from None
    from geoseg.io.raster import check_input_file

    check_input_file(file, "STAC file")
    if os.path.getsize(file) > MAX_STAC_BYTES:
        raise InputError(
            f"STAC file {file} is over {MAX_STAC_BYTES >> 20} MiB; split the item collection"
        )
    try:
        return Path(file).read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read STAC file {file} ({one_line(exc)}); pass UTF-8 JSON"
        ) from None


def read_items(file: str) -> list[Any]:
    """The items (``pystac.Item``) of a STAC item file or item collection / search result."""
    import pystac
    from pystac import errors

    stac_errors = (errors.STACError, errors.STACTypeError, errors.RequiredPropertyMissing)
    try:
        doc = json.loads(_read_text(file))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"STAC file {file} is not valid JSON ({one_line(exc)}); fix it") from None
    kind = doc.get("type") if isinstance(doc, dict) else None
    try:
        if kind == "Feature":
            return [pystac.Item.from_dict(doc, preserve_dict=False)]
        if kind == "FeatureCollection":
            return list(pystac.ItemCollection.from_dict(doc, preserve_dict=False).items)
    except (*stac_errors, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            f"STAC file {file} is not a valid STAC item ({one_line(exc)}); fix it"
        ) from None
    raise InputError(
        f"{file} is a JSON {kind or type(doc).__name__}, not a STAC item or item collection; "
        "pass an item (type Feature) or a search result (type FeatureCollection)"
    )


def select_item(path: str) -> tuple[str, Any]:
    """The STAC file and the one item ``path`` names (``FILE`` of one item, or ``FILE#ID``)."""
    file, item_id = split_item(path)
    items = read_items(file)
    if item_id is not None:
        hits = [it for it in items if it.id == item_id]
        if not hits:
            raise InputError(f"{file} holds no STAC item {item_id!r}; check the item id")
        return file, hits[0]
    if len(items) != 1:
        raise InputError(
            f"{file} is a STAC item collection of {len(items)} items; predict them with "
            "--output-dir DIR (one output per item) or pick one as FILE#ITEM_ID"
        )
    return file, items[0]


def item_inputs(path: str) -> list[str]:
    """One batch input per item of a STAC file: ``FILE#ITEM_ID`` (named by the item id)."""
    file, item_id = split_item(path)
    if item_id is not None:
        return [path]
    return [f"{file}#{item.id}" for item in read_items(file)]


def asset_href(file: str, href: str) -> str:
    """An asset's href as GDAL opens it: relative ones resolve against the STAC file."""
    if is_gdal_url(href) or "://" in href or os.path.isabs(href):
        return vsi_path(href) if is_gdal_url(href) else href
    if is_gdal_url(file) or "://" in file:
        return vsi_path(_url_join(file.partition("?")[0], href))
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(file)), href))


def _url_join(base: str, href: str) -> str:
    """``href`` relative to the URL or ``/vsi`` path ``base`` (any scheme, s3:// too)."""
    prefix = ""
    if base.startswith("/vsi"):
        handler, _, base = base[1:].partition("/")
        prefix = f"/{handler}/"
    scheme, sep, rest = base.partition("://")
    if not sep:
        scheme, rest = "", base
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rest), href))
    return f"{prefix}{scheme}{sep}{joined}"


def _bands_field(asset: Any, name: str) -> list[dict[str, Any]]:
    """The asset's ``raster:bands`` / ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1) list."""
    value = asset.extra_fields.get(name)
    if not isinstance(value, list):
        value = asset.extra_fields.get("bands")
    return [b if isinstance(b, dict) else {} for b in value] if isinstance(value, list) else []


def raster_assets(item: Any) -> dict[str, Any]:
    """The item's assets that hold raster data (images, or assets that describe bands)."""
    out = {}
    for key, asset in item.assets.items():
        if NOT_RASTER_ROLES & set(asset.roles or ()):
            continue
        media = (asset.media_type or "").lower()
        described = any(k in asset.extra_fields for k in ("raster:bands", "eo:bands", "bands"))
        suffix = asset.href.partition("?")[0].lower().endswith(RASTER_SUFFIXES)
        if media.startswith("image/") or described or suffix:
            out[key] = asset
    return out


# --------------------------------------------------------------------------------------------
# Resolving and stacking assets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandRef:
    """One band of the stack: which asset and band it is, and its ``raster:bands`` scaling."""

    key: str
    href: str
    band: int | None  # 1-based band of the asset; None: every band of it
    scale: float = 1.0
    offset: float = 0.0


def _band_names(band: dict[str, Any]) -> set[str]:
    names = (band.get("common_name"), band.get("eo:common_name"), band.get("name"))
    return {str(n).lower() for n in names if n}


def resolve(item: Any, file: str, names: Sequence[str]) -> list[BandRef]:
    """The bands ``names`` select: asset keys first, else ``eo:bands`` common or band names."""
    assets = raster_assets(item)
    refs = []
    for name in names:
        if name in assets:
            refs.append(BandRef(name, asset_href(file, assets[name].href), None))
            continue
        hits = [
            (key, i)
            for key, asset in assets.items()
            for i, band in enumerate(_bands_field(asset, "eo:bands"), 1)
            if name.lower() in _band_names(band)
        ]
        if not hits:
            raise InputError(
                f"STAC item {item.id} has no raster asset or band {name!r}; its raster assets "
                f"are {', '.join(assets) or 'none'}: pick --assets from them",
                option="assets",
            )
        key, band = hits[0]
        single = len(_bands_field(assets[key], "eo:bands")) == 1
        refs.append(BandRef(key, asset_href(file, assets[key].href), None if single else band))
    return refs


def _scaling(asset: Any, count: int) -> list[tuple[float, float]]:
    """``(scale, offset)`` of each of an asset's ``count`` bands from ``raster:bands``."""
    bands = _bands_field(asset, "raster:bands")
    out = []
    for i in range(count):
        b = bands[i] if i < len(bands) else {}
        scale = b.get("scale", b.get("raster:scale", 1.0))
        offset = b.get("offset", b.get("raster:offset", 0.0))
        ok = all(isinstance(v, int | float) and np.isfinite(v) for v in (scale, offset))
        out.append((float(scale), float(offset)) if ok and scale != 0 else (1.0, 0.0))
    return out


@dataclass(frozen=True)
class AssetGrid:
    """What the stack needs of one opened asset: grid, bands, dtypes, nodata, block shape."""

    crs: Any
    transform: tuple[float, ...]
    width: int
    height: int
    dtypes: tuple[str, ...]
    nodatas: tuple[float | None, ...]
    block: tuple[int, int]


def _open_grid(ref: BandRef) -> AssetGrid:
    """Open one asset (GDAL decides what the href is) and describe its grid."""
    import warnings

    import rasterio
    from rasterio.errors import RasterioError

    from geoseg.errors import RasterReadError
    from geoseg.io.raster import check_input_file, open_env

    if not is_gdal_url(ref.href):
        check_input_file(ref.href, f"STAC asset {ref.key!r}")
    try:
        with warnings.catch_warnings(), open_env(ref.href), rasterio.open(ref.href) as src:
            warnings.simplefilter("ignore")
            h, w = src.block_shapes[0]
            return AssetGrid(
                src.crs,
                tuple(src.transform)[:6],
                src.width,
                src.height,
                tuple(src.dtypes),
                tuple(src.nodatavals),
                (h, w),
            )
    except RasterioError as exc:
        raise RasterReadError(
            f"STAC asset {ref.key!r} ({ref.href}) is not a readable raster ({one_line(exc)}); "
            "check the item's href"
        ) from None


def _grid_difference(a: AssetGrid, b: AssetGrid) -> str | None:
    """What differs between two assets' grids (None: the same grid)."""
    if (a.width, a.height) != (b.width, b.height):
        return f"size {b.width}x{b.height} instead of {a.width}x{a.height}"
    if a.crs != b.crs:
        return f"CRS {b.crs} instead of {a.crs}"
    if not np.allclose(a.transform, b.transform, rtol=1e-9, atol=1e-9):
        return f"transform {b.transform} instead of {a.transform}"
    return None


def stack_bands(
    item: Any, file: str, names: Sequence[str]
) -> tuple[list[BandRef], dict[str, AssetGrid]]:
    """Every band of the stack, each with its scaling, after checking the assets share a grid."""
    refs = resolve(item, file, names)
    grids: dict[str, AssetGrid] = {}
    out: list[BandRef] = []
    first = None
    for ref in refs:
        grid = grids.get(ref.href) or _open_grid(ref)
        grids[ref.href] = grid
        if first is None:
            first = (ref.key, grid)
        elif (diff := _grid_difference(first[1], grid)) is not None:
            raise AlignmentError(
                f"STAC asset {ref.key!r} of item {item.id} has {diff} of asset {first[0]!r}; "
                "stack assets of one grid (e.g. bands of the same resolution)"
            )
        scaling = _scaling(item.assets[ref.key], len(grid.dtypes))
        bands = [ref.band] if ref.band is not None else range(1, len(grid.dtypes) + 1)
        for b in bands:
            if not 1 <= b <= len(grid.dtypes):
                raise InputError(
                    f"STAC asset {ref.key!r} has {len(grid.dtypes)} band(s), not band {b}; "
                    "fix the item's eo:bands"
                )
            out.append(replace(ref, band=b, scale=scaling[b - 1][0], offset=scaling[b - 1][1]))
    return out, grids


def stack_dtype(dtypes: Sequence[str]) -> str:
    """The one dtype the stacked bands are read as (the assets' common type)."""
    dtype = np.result_type(*[np.dtype(d) for d in dtypes]).name
    return dtype if dtype in GDAL_TYPES else "float64"


def vrt_xml(bands: Sequence[BandRef], grids: dict[str, AssetGrid]) -> str:
    """A VRT stacking ``bands`` (one VRT band per entry, in order) on their shared grid."""
    first = grids[bands[0].href]
    dtype = stack_dtype([grids[b.href].dtypes[b.band - 1] for b in bands])
    root = ET.Element("VRTDataset", rasterXSize=str(first.width), rasterYSize=str(first.height))
    if first.crs:
        ET.SubElement(root, "SRS").text = first.crs.to_wkt()
    a, b, c, d, e, f = first.transform
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in (c, a, b, f, d, e))
    for i, ref in enumerate(bands, 1):
        grid = grids[ref.href]
        band = ET.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[dtype], band=str(i))
        nodata = grid.nodatas[ref.band - 1]
        if nodata is not None:
            ET.SubElement(band, "NoDataValue").text = repr(float(nodata))
        ET.SubElement(band, "Description").text = ref.key
        source = ET.SubElement(band, "ComplexSource" if nodata is not None else "SimpleSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = ref.href
        ET.SubElement(source, "SourceBand").text = str(ref.band)
        ET.SubElement(
            source,
            "SourceProperties",
            RasterXSize=str(grid.width),
            RasterYSize=str(grid.height),
            DataType=GDAL_TYPES.get(grid.dtypes[ref.band - 1], "Float64"),
            BlockXSize=str(grid.block[1]),
            BlockYSize=str(grid.block[0]),
        )
        size = {"xOff": "0", "yOff": "0", "xSize": str(grid.width), "ySize": str(grid.height)}
        ET.SubElement(source, "SrcRect", **size)
        ET.SubElement(source, "DstRect", **size)
        if nodata is not None:
            ET.SubElement(source, "NODATA").text = repr(float(nodata))
    return ET.tostring(root, encoding="unicode")


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------


class StacSource(RasterSource):
    """The stacked assets of one STAC item, read through a VRT in an exclusive temporary folder.

    The process that opened the item owns the folder and removes it on :meth:`close` (or when
    the source is garbage collected); a pickled copy (a worker's) reads the VRT and owns
    nothing. Read errors name the VRT's source files, as GDAL reports them.
    """

    def __init__(self, name: str, inner: GdalSource, owner: Any = None) -> None:
        self._name = name
        self._inner = inner
        self._owner = owner  # tempfile.TemporaryDirectory, in the opening process only
        self._info = None

    @property
    def info(self) -> Any:  # type: ignore[override]
        """The stack's description, under the STAC input's name."""
        if self._info is None:
            self._info = replace(self._inner.info, path=self._name)
        return self._info

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of the stack (see :meth:`RasterSource.read`)."""
        return self._inner.read(row, col, height, width)

    def read_windows(self, windows: Sequence[Window]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Read windows of the stack (see :meth:`RasterSource.read_windows`)."""
        return self._inner.read_windows(windows)

    def tags(self) -> dict[str, str]:
        """The VRT's tags (none of the item's)."""
        return {}

    def close(self) -> None:
        """Close the VRT's handles; the owner also removes the temporary folder."""
        self._inner.close()
        if self._owner is not None:
            self._owner.cleanup()
            self._owner = None

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self._name, "inner": self._inner}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["inner"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"StacSource({self._name!r})"


def open_item(
    path: str, assets: Sequence[str] | None, bands: Sequence[int] | None = None
) -> tuple[RasterSource, list[float], list[float]]:
    """Open a STAC input as a band stack; also return each selected band's scale and offset.

    Parameters
    ----------
    path : str
        A STAC item file or URL, or ``FILE#ITEM_ID`` of an item collection.
    assets : sequence of str
        Asset keys (or ``eo:bands`` common names), stacked in this order.
    bands : sequence of int, optional
        1-based bands of the stack to read (``--bands``).
    """
    file, item = select_item(path)
    if not assets:
        keys = ", ".join(raster_assets(item)) or "none"
        raise ConfigError(
            f"{path} is a STAC item: name the assets to stack with --assets (its raster "
            f"assets: {keys}), e.g. --assets {keys.split(', ')[0]}"
        )
    refs, grids = stack_bands(item, file, assets)
    owner = tempfile.TemporaryDirectory(prefix="geoseg-stac-")
    try:
        vrt = Path(owner.name) / "stack.vrt"
        with open(vrt, "x", encoding="utf-8") as fh:  # "x": never an existing file
            fh.write(vrt_xml(refs, grids))
        from geoseg.io.raster import _probed

        source = StacSource(path, _probed(GdalSource(str(vrt), bands)), owner)
    except BaseException:
        owner.cleanup()
        raise
    selected = source.info.band_indexes
    return source, [refs[b - 1].scale for b in selected], [refs[b - 1].offset for b in selected]


# --------------------------------------------------------------------------------------------
# The files a STAC input reads (output guards, resume identity)
# --------------------------------------------------------------------------------------------


def _asset_hrefs(path: str) -> tuple[str, list[str]]:
    """The STAC file and the hrefs of the raster assets of the item(s) ``path`` names."""
    file, item_id = split_item(path)
    items = [it for it in read_items(file) if item_id is None or it.id == item_id]
    hrefs = [asset_href(file, a.href) for it in items for a in raster_assets(it).values()]
    return file, list(dict.fromkeys(hrefs))


def stac_files(path: str) -> list[str]:
    """Every file a STAC input reads: the STAC file, its raster assets and their sidecars.

    A listing for the output guards, so nothing is raised: an unreadable item lists its file
    alone (opening it reports the error).
    """
    from geoseg.io.raster import raster_files

    try:
        file, hrefs = _asset_hrefs(path)
    except InputError:
        return [split_item(path)[0]]
    return list(dict.fromkeys([file, *(f for h in hrefs for f in raster_files(h))]))


def stac_data_files(path: str) -> list[str]:
    """The files whose stamps identify a STAC input: the STAC file and its raster assets."""
    try:
        file, hrefs = _asset_hrefs(path)
    except InputError:
        return [split_item(path)[0]]
    return [file, *hrefs]
