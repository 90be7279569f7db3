"""Raster readers: windowed, lazily opened, picklable sources for GDAL rasters and Zarr stores.

All input file I/O of geoseg lives here. A :class:`RasterSource` is opened once in the main
process to validate the input and describe it (:class:`RasterInfo`); when it is pickled only its
path and band selection travel (with geoseg's GDAL options and, for a GDAL URL, GDAL's identity
of the file), and every process (and every thread, since GDAL handles must not
be shared between threads) re-opens its own handle on first use, like xarray's file managers.

``read`` returns raw values as float32 plus a ``valid`` mask; windows may hang off the raster,
in which case the outside is reflect-padded and marked invalid. Scaling and normalization belong
to the engine; only a user's ``--scale``/``--offset`` (or a STAC item's ``raster:bands``), which
say what the raw numbers mean, are applied here (:class:`ScaledSource`).

Paths that only GDAL resolves (``/vsicurl/``, ``/vsis3/``, ``/vsizip/``, ``https://``,
``s3://``, ``zip://``: :func:`is_gdal_url`) skip the local-file checks and are opened by GDAL,
which reports a missing one itself.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError, RasterReadError
from tilers.grid import Window

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

__all__ = [
    "SUPPORTED_DTYPES",
    "ArraySource",
    "RasterInfo",
    "RasterSource",
    "check_input_file",
    "gdal_local_file",
    "is_gdal_url",
    "open_dataset",
    "open_raster",
    "shared_dataset",
    "shared_warped",
    "raster_files",
]


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know about an input raster.

    Attributes
    ----------
    path : str
        The raster's path (``"<array>"`` for an in-memory image).
    height, width : int
        Size in pixels.
    count : int
        Number of selected bands.
    band_indexes : tuple of int
        1-based indexes of the selected bands.
    dtype : str
        Source dtype (``"uint8"``, ``"int16"``, ``"float32"``...).
    crs_wkt : str or None
        The CRS as WKT; None when the raster has none.
    transform : tuple of float
        Affine coefficients ``(a, b, c, d, e, f)``; the identity when absent.
    nodata : float or None
        The nodata value of the first selected band (NaN allowed).
    georeferenced : bool
        True when the raster has a CRS or a non-identity transform.
    kind : str
        ``"gdal"``, ``"zarr"`` or ``"array"``.
    gcps : tuple of (row, col, x, y, z)
        Ground control points, for a raster georeferenced by them alone (else empty).
    gcp_crs_wkt : str or None
        The CRS of the ground control points.
    """

    path: str
    height: int
    width: int
    count: int
    band_indexes: tuple[int, ...]
    dtype: str
    crs_wkt: str | None
    transform: tuple[float, ...]
    nodata: float | None
    georeferenced: bool
    kind: str
    gcps: tuple[tuple[float, float, float, float, float], ...] = ()
    gcp_crs_wkt: str | None = None


# --------------------------------------------------------------------------------------------
# Pure helpers: window clipping, padding, validity (no I/O)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """The part of a requested window that lies inside the raster, and the padding around it."""

    row0: int
    row1: int
    col0: int
    col1: int
    pad_rows: tuple[int, int]
    pad_cols: tuple[int, int]

    @property
    def empty(self) -> bool:
        """True when the window does not overlap the raster at all."""
        return self.row1 <= self.row0 or self.col1 <= self.col0

    @property
    def padded(self) -> bool:
        """True when part of the window lies outside the raster."""
        return any(self.pad_rows) or any(self.pad_cols)


def clip_window(row: int, col: int, height: int, width: int, shape: tuple[int, int]) -> Clip:
    """Intersect the window ``(row, col, height, width)`` with a raster of ``shape``.

    Parameters
    ----------
    row, col : int
        Top-left pixel of the window (may be negative).
    height, width : int
        Window size (positive).
    shape : (int, int)
        Raster ``(height, width)``.

    Returns
    -------
    Clip
        Inside bounds and the ``(before, after)`` padding per axis.
    """
    if height <= 0 or width <= 0:
        raise InputError(f"window size {height}x{width} is empty; expected positive sizes")
    n_rows, n_cols = shape
    inside = Window(row, col, height, width).intersection(Window(0, 0, n_rows, n_cols))
    if inside is None:  # wholly outside: an empty clip at the nearest edge, all padding
        r0 = r1 = min(max(row, 0), n_rows)
        c0 = c1 = min(max(col, 0), n_cols)
    else:
        r0, r1, c0, c1 = inside.row, inside.row_stop, inside.col, inside.col_stop
    pad_rows = (r0 - row, height - (r1 - row))
    pad_cols = (c0 - col, width - (c1 - col))
    return Clip(r0, r1, c0, c1, pad_rows, pad_cols)


def _pad_mode(size: int) -> str:
    return "reflect" if size > 1 else "edge"


def reflect_pad(
    data: np.ndarray, pad_rows: tuple[int, int], pad_cols: tuple[int, int]
) -> np.ndarray:
    """Reflect-pad the last two axes of ``data`` (``edge`` for an axis of one pixel).

    Parameters
    ----------
    data : ndarray
        ``(..., h, w)`` with ``h, w >= 1``.
    pad_rows, pad_cols : (int, int)
        Pixels to add before and after along rows and columns.

    Returns
    -------
    ndarray
        ``(..., h + sum(pad_rows), w + sum(pad_cols))``.
    """
    lead = [(0, 0)] * (data.ndim - 2)
    out = np.pad(data, [*lead, pad_rows, (0, 0)], mode=_pad_mode(data.shape[-2]))
    return np.pad(out, [*lead, (0, 0), pad_cols], mode=_pad_mode(data.shape[-1]))


def nodata_valid(data: np.ndarray, nodatas: Sequence[float | None]) -> np.ndarray:
    """Pixels that are not nodata: at least one band differs from its nodata value.

    This is GDAL's dataset-mask rule: a dark pixel with one band at the nodata value (a shadow
    with blue = 0) is still data; only pixels where every band with a nodata value is nodata
    are masked. NaN nodata matches NaN.

    Parameters
    ----------
    data : ndarray
        ``(bands, h, w)`` in the source dtype.
    nodatas : sequence of float or None
        One nodata value per band (None: the band has none).

    Returns
    -------
    ndarray
        ``(h, w)`` bool.
    """
    nodata = None
    for band, nd in zip(data, nodatas, strict=True):
        if nd is None:
            return np.ones(data.shape[1:], dtype=bool)
        if np.isnan(nd):
            is_nd = np.isnan(band) if band.dtype.kind == "f" else np.zeros(band.shape, bool)
        else:
            is_nd = band == np.asarray(nd).astype(band.dtype)
        nodata = is_nd if nodata is None else nodata & is_nd
    return np.ones(data.shape[1:], dtype=bool) if nodata is None else ~nodata


def finalize(data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert to float32; non-finite values become 0 and invalid (a NaN would poison a model).

    Parameters
    ----------
    data : ndarray
        ``(bands, h, w)`` raw values.
    valid : ndarray
        ``(h, w)`` bool.

    Returns
    -------
    (ndarray, ndarray)
        float32 data and the updated mask.
    """
    out = np.asarray(data, dtype=np.float32)
    if np.asarray(data).dtype.kind == "f":
        finite = np.isfinite(out)
        if not finite.all():
            valid = valid & finite.all(axis=0)
            out = np.where(finite, out, np.float32(0))
    return out, valid


def assemble(
    clip: Clip, bands: int, inside: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Build the full window from its inside part: reflect padding, ``valid=False`` outside.

    Parameters
    ----------
    clip : Clip
        From :func:`clip_window`.
    bands : int
        Band count (used when the window misses the raster).
    inside : (ndarray, ndarray) or None
        float32 data ``(bands, h, w)`` and valid ``(h, w)`` of the inside part.

    Returns
    -------
    (ndarray, ndarray)
        float32 ``(bands, H, W)`` and bool ``(H, W)`` for the whole window.
    """
    height = clip.row1 - clip.row0 + sum(clip.pad_rows)
    width = clip.col1 - clip.col0 + sum(clip.pad_cols)
    if inside is None or clip.empty:
        return np.zeros((bands, height, width), np.float32), np.zeros((height, width), bool)
    data, valid = inside
    if not clip.padded:
        return data, valid
    out = reflect_pad(data, clip.pad_rows, clip.pad_cols)
    mask = np.zeros((height, width), bool)
    r, c = clip.pad_rows[0], clip.pad_cols[0]
    mask[r : r + valid.shape[0], c : c + valid.shape[1]] = valid
    return out, mask


def row_runs(windows: Sequence[Window]) -> list[list[Window]]:
    """Split windows, in their order, into runs that one rectangular read covers exactly.

    A run's windows share their rows, and each starts at or right of the one before it and no
    further right than where that one ends: consecutive windows of one grid row.
    """
    runs: list[list[Window]] = []
    for w in windows:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and (w.row, w.height) == (last.row, last.height)
            and last.col <= w.col <= last.col_stop
        ):
            runs[-1].append(w)
        else:
            runs.append([w])
    return runs


def check_dtype(dtype: str, path: str) -> str:
    """Refuse dtypes the pipeline cannot scale (complex, int8, ...)."""
    if dtype not in SUPPORTED_DTYPES:
        raise RasterReadError(
            f"{path} has dtype {dtype}, which geoseg cannot read; expected one of "
            f"{', '.join(SUPPORTED_DTYPES)}: convert it (e.g. gdal_translate -ot Float32)"
        )
    return dtype


def check_bands(bands: Sequence[int] | None, count: int) -> tuple[int, ...]:
    """Validate a 1-based band selection against a raster of ``count`` bands.

    Parameters
    ----------
    bands : sequence of int or None
        Selected bands; None selects all.
    count : int
        The raster's band count.

    Returns
    -------
    tuple of int
    """
    if bands is None:
        return tuple(range(1, count + 1))
    selected = tuple(int(b) for b in bands)
    if not selected:
        raise InputError(f"bands is empty; pick band indexes in 1..{count}", option="bands")
    for b in selected:
        if not 1 <= b <= count:
            raise InputError(
                f"bands {b}: the raster has {count} band{'s' if count != 1 else ''} "
                f"(1..{count}); pick indexes in that range",
                option="bands",
            )
    return selected


def check_size(height: int, width: int, path: str) -> None:
    """Refuse a raster without pixels."""
    if height <= 0 or width <= 0:
        raise RasterReadError(
            f"{path} is a zero-size raster ({height}x{width}); expected at least 1x1 pixels: "
            "pass a raster with data"
        )


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (GDAL messages can span several).

    rasterio wraps GDAL's own message ("IReadBlock failed at X offset ...") as the cause of a
    generic "Read failed"; the cause is the informative one.
    """
    cause = exc.__cause__
    if cause is not None and "see previous exception" in str(exc).lower():
        exc = cause
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# GDAL paths: URLs and /vsi paths that only GDAL resolves (remote files, archive members)
# --------------------------------------------------------------------------------------------

# URL schemes rasterio maps to GDAL's /vsi handlers ("zip+https://..." combines them); file://
# alone is a local path.
URL_SCHEMES = frozenset({"ftp", "gzip", "http", "https", "s3", "tar", "zip", "oss", "gs", "az"})
NETWORK_HANDLERS = frozenset(
    {"vsicurl", "vsis3", "vsigs", "vsiaz", "vsiadls", "vsioss", "vsiswift", "vsiwebhdfs"}
    | {f"vsi{n}_streaming" for n in ("curl", "s3", "gs", "az", "oss", "swift")}
)
ARCHIVE_HANDLERS = frozenset({"vsizip", "vsitar", "vsigzip", "vsi7z", "vsirar"})
ARCHIVE_SUFFIXES = (".zip", ".kmz", ".tar", ".tgz", ".tar.gz", ".gz", ".7z", ".rar")
# HTTP headers that change when a remote object is rewritten (size alone does not)
VERSION_HEADERS = ("etag", "last-modified", "x-goog-generation")


def is_gdal_url(path: str | os.PathLike[str] | None) -> bool:
    """True for a path that only GDAL resolves: ``/vsi...`` or a URL rasterio maps to one.

    Such a path is no file of the local file system, so ``os.stat``-style checks would call it
    missing: GDAL itself is left to open it (and to say when it is missing).
    """
    if path is None:
        return False
    text = os.fspath(path)
    if text.startswith("/vsi"):
        return True
    scheme, sep, _ = text.partition("://")
    parts = scheme.lower().split("+")
    return bool(sep) and all(p in URL_SCHEMES | {"file"} for p in parts) and parts != ["file"]


def vsi_path(path: str) -> str:
    """The ``/vsi...`` name GDAL opens for ``path`` (rasterio's own mapping of URL schemes)."""
    if not is_gdal_url(path) or path.startswith("/vsi"):
        return path
    from rasterio._path import _parse_path

    return _parse_path(path).as_vsi()


def _archive_part(rest: str) -> str:
    """The archive of ``ARCHIVE/member`` (``{ARCHIVE}/member``, or up to a ``.zip``-like name)."""
    if rest.startswith("{"):
        return rest[1:].partition("}")[0]
    ends = [i for i, c in enumerate(rest) if c == "/"] + [len(rest)]
    for end in ends:
        if rest[:end].lower().endswith(ARCHIVE_SUFFIXES):
            return rest[:end]
    return rest


def gdal_base(path: str) -> tuple[str, str]:
    """What a GDAL path reads in the end: ``("local", file)``, ``("network", url)`` or other.

    ``/vsizip/a.zip/b.tif`` reads the local file ``a.zip``; ``/vsicurl/https://h/x.tif`` and
    ``/vsizip//vsis3/bucket/a.zip/b.tif`` read network objects (``/vsicurl/...`` and
    ``/vsis3/bucket/a.zip``); ``/vsimem/...`` and the like are ``("other", path)``.
    """
    vsi = vsi_path(path)
    while vsi.startswith("/vsi"):
        handler, _, rest = vsi[1:].partition("/")
        if handler in NETWORK_HANDLERS:
            return "network", vsi
        if handler not in ARCHIVE_HANDLERS:
            return "other", vsi
        vsi = _archive_part(rest)
    return "local", vsi


def gdal_local_file(path: str | os.PathLike[str]) -> str | None:
    """The local file a path reads (itself, or a ``/vsizip/`` archive); None for a network one.

    An output can only overwrite a local file, so output guards compare outputs with this.
    """
    text = os.fspath(path)
    if not is_gdal_url(text):
        return text
    kind, base = gdal_base(text)
    return base if kind == "local" else None


def http_headers(url: str) -> dict[str, str]:
    """The HTTP headers GDAL reports for a network file (lower-case names; {} if none).

    rasterio does not expose ``VSIGetFileMetadata``; the libgdal it loaded does.
    """
    import ctypes

    from geoseg.io.gdal import libgdal

    lib = libgdal()
    if lib is None:
        return {}
    lib.VSIGetFileMetadata.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.VSIGetFileMetadata.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    lib.CSLDestroy.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    found = lib.VSIGetFileMetadata(url.encode(), b"HEADERS", None)
    out: dict[str, str] = {}
    if not found:
        return out
    try:
        i = 0
        while found[i]:
            key, _, value = found[i].decode("utf-8", "replace").partition("=")
            out[key.strip().lower()] = value.strip()
            i += 1
    finally:
        lib.CSLDestroy(found)
    return out


def gdal_identity(path: str) -> list | None:
    """What identifies the content of a GDAL path now, as GDAL reports it; None if unknown.

    A local archive: its size and modification time. A network file: its size and the
    headers that change with a rewrite (ETag, Last-Modified, generation). None when the server
    reports none of those: a rewritten object could then not be told from the old one.
    """
    kind, base = gdal_base(path)
    if kind == "local":
        try:
            st = os.stat(base)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]
    if kind != "network":
        return None
    headers = http_headers(base)
    version = [headers.get(h) for h in VERSION_HEADERS]
    if not any(version):
        return None
    return [headers.get("content-length"), *version]


def open_env(path: str) -> Any:
    """GDAL options in force (in this thread) while ``path`` is opened: see ``memory``.

    A network file is opened without listing its remote folder; anything else as before.
    """
    import rasterio

    from geoseg.io.gdal import remote_open_options

    if not is_gdal_url(path) or gdal_base(path)[0] != "network":
        return contextlib.nullcontext()
    return rasterio.Env.from_defaults(**remote_open_options())


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


class RasterSource:
    """A readable raster: :attr:`info` plus windowed :meth:`read`.

    Subclasses implement ``_read_inside(clip) -> (float32 data, valid)`` for a window that
    lies inside the raster; the base class clips and pads.
    """

    info: RasterInfo

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window as float32 ``(bands, height, width)`` and a bool ``valid`` mask.

        Parameters
        ----------
        row, col : int
            Top-left pixel; the window may extend past the raster.
        height, width : int
            Window size.

        Returns
        -------
        (ndarray, ndarray)
            Raw values (float32) and ``valid`` (False outside the raster, at nodata, where the
            dataset mask is 0, and at non-finite values, which are returned as 0).
        """
        info = self.info
        clip = clip_window(row, col, height, width, (info.height, info.width))
        inside = None if clip.empty else self._read_inside(clip)
        return assemble(clip, info.count, inside)

    def read_windows(self, windows: Sequence[Window]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Read several windows: the same arrays as :meth:`read` of each, in order.

        Each run of windows along a grid row (:func:`row_runs`) is read as one rectangle, and
        the windows are cut from it (views of it): one read call and one conversion to float32
        per run instead of per window. A call's fixed cost is much of a small window's read:
        GDAL's and rasterio's, and xarray's, which also decodes every Zarr chunk the window
        touches again at each call.
        """
        shape, bands = (self.info.height, self.info.width), self.info.count
        out = []
        for run in row_runs(windows):
            clips = [clip_window(w.row, w.col, w.height, w.width, shape) for w in run]
            inside = [c for c in clips if not c.empty]
            if not inside:
                out += [assemble(c, bands, None) for c in clips]
                continue
            c0, c1 = min(c.col0 for c in inside), max(c.col1 for c in inside)
            union = Clip(inside[0].row0, inside[0].row1, c0, c1, (0, 0), (0, 0))
            data, valid = self._read_inside(union)
            for c in clips:
                part = (data[:, :, c.col0 - c0 : c.col1 - c0], valid[:, c.col0 - c0 : c.col1 - c0])
                out.append(assemble(c, bands, None if c.empty else part))
        return out

    def _read_inside(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def tags(self) -> dict[str, str]:
        """Metadata tags as text (class names live here: ``labels.class_names_from_tags``)."""
        return {}

    def close(self) -> None:
        """Release open file handles (a later read re-opens them)."""

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArraySource(RasterSource):
    """An in-memory image with the :class:`RasterSource` interface.

    Parameters
    ----------
    image : ndarray
        ``(bands, H, W)`` (or ``(H, W)`` for one band) raw values.
    valid : ndarray, optional
        ``(H, W)`` bool mask of pixels with data; default all valid.
    """

    def __init__(self, image: np.ndarray, valid: np.ndarray | None = None) -> None:
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise InputError(
                f"image has shape {image.shape}; expected (bands, height, width) or (height, width)"
            )
        _, h, w = image.shape
        check_size(h, w, "<array>")
        if valid is not None and np.shape(valid) != (h, w):
            raise InputError(
                f"valid mask has shape {np.shape(valid)}; expected the image's ({h}, {w})"
            )
        self._image = image
        self._valid = None if valid is None else np.asarray(valid, dtype=bool)
        self.info = RasterInfo(
            path="<array>",
            height=h,
            width=w,
            count=image.shape[0],
            band_indexes=tuple(range(1, image.shape[0] + 1)),
            dtype=str(image.dtype),
            crs_wkt=None,
            transform=IDENTITY,
            nodata=None,
            georeferenced=False,
            kind="array",
        )

    def _read_inside(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = slice(clip.row0, clip.row1), slice(clip.col0, clip.col1)
        data = self._image[:, rows, cols]
        if self._valid is None:
            valid = np.ones(data.shape[1:], bool)
        else:
            valid = self._valid[rows, cols].copy()
        return finalize(data, valid)


class _HandleCache:
    """Open file handles of this process, shared by every source object of the same file.

    Dask unpickles a task's source afresh for every task, so a handle owned by the source
    object would be re-opened (and, as measured, kept alive with its GDAL buffers: ~1.5 MB per
    task, 2.7 GB over a 16384^2 raster) for each of thousands of tasks. Handles are therefore
    kept here, keyed by process, thread (GDAL handles must not cross threads) and file identity
    (path, band selection, inode, size, mtime: a rewritten file is re-opened; for a GDAL URL,
    what GDAL reports of it, see :func:`_file_identity`). Each thread keeps
    at most ``per_thread`` files open and closes its least recently used one beyond that, so a
    long-lived worker that reads many rasters holds a bounded number of handles.

    Only the thread that uses a handle closes it, between two of its reads: a handle that
    :meth:`close` takes from another live thread is closed at that thread's next :meth:`get`,
    as that thread may be reading it at that moment (an interrupted run still has tasks
    reading on in-process workers; GDAL freeing a dataset under a read crashes the process).
    """

    def __init__(self, per_thread: int = 4) -> None:
        self.per_thread = per_thread
        self._lock = threading.Lock()
        self._handles: dict[tuple[int, int, tuple], Any] = {}  # insertion order = LRU order
        self._retired: dict[tuple[int, int], list[Any]] = {}  # closed by their thread's next get

    def get(self, file_key: tuple, opener: Any) -> Any:
        """The current thread's handle for ``file_key``, opened with ``opener()`` if needed."""
        thread = (os.getpid(), threading.get_ident())
        key = (*thread, file_key)
        with self._lock:
            retired = self._retired.pop(thread, [])
            handle = self._handles.pop(key, None)
            if handle is not None:
                self._handles[key] = handle  # most recently used
        for old in retired:
            old.close()
        if handle is not None:
            return handle
        handle = opener()
        with self._lock:
            self._handles[key] = handle
            mine = [k for k in self._handles if k[:2] == thread]
            stale = [self._handles.pop(k) for k in mine[: max(0, len(mine) - self.per_thread)]]
        for old in stale:
            old.close()
        return handle

    def close(self, file_key: tuple) -> None:
        """Release this process's handles of ``file_key`` (call when its reads are done).

        The calling thread's handle and those of threads that have ended are closed now; a
        live thread's at its next :meth:`get`.
        """
        pid, me = os.getpid(), threading.get_ident()
        alive = {t.ident for t in threading.enumerate()}
        now = []
        with self._lock:
            for key in [k for k in self._handles if k[0] == pid and k[2] == file_key]:
                handle = self._handles.pop(key)
                if key[1] == me or key[1] not in alive:
                    now.append(handle)
                else:
                    self._retired.setdefault(key[:2], []).append(handle)
        for handle in now:
            handle.close()


_HANDLES = _HandleCache()


def _file_identity(path: str) -> tuple:
    """A cache key part that changes when the file is rewritten (a stat, or GDAL's identity).

    A GDAL URL gets :func:`gdal_identity` (a request, for a network file): it is taken once in
    the process that opens the input and travels with the pickled source, so a worker's task
    makes no request of its own for it.
    """
    if is_gdal_url(path):
        return ("gdal", *(gdal_identity(path) or ()))
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)  # opening reports the error
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def open_dataset(path: str | os.PathLike[str], what: str = "raster") -> Any:
    """Open ``path`` with rasterio, for the caller to close.

    FIFOs and devices are refused first; GDAL failing to open it is a one-line
    :class:`RasterReadError`.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    path = os.fspath(path)
    if not is_gdal_url(path):
        check_input_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterReadError(f"cannot open {path} ({exc}); check the path") from None


def check_class_map(count: int, dtype: str, path: str | os.PathLike[str]) -> None:
    """A class map is one band of integer ids of at most 16 bits (as geoseg writes them)."""
    from geoseg.core.labels import check_integer_dtype

    if count != 1:
        raise InputError(
            f"class map {os.fspath(path)} has {count} bands; expected one band of class ids: "
            "extract it with gdal_translate -b 1"
        )
    check_integer_dtype(dtype, f"class map {os.fspath(path)}", max_bits=16)


def open_class_map(path: str | os.PathLike[str]) -> RasterSource:
    """Open a class map for block reads (:func:`check_class_map`; the caller closes it).

    Raises
    ------
    RasterReadError
        Missing or unreadable.
    InputError, LabelError
        Several bands, or float (or wider integer) values.
    """
    check_input_file(path, "class map", folder_ok=True)
    source = open_raster(path)
    try:
        check_class_map(source.info.count, source.info.dtype, path)
    except BaseException:
        source.close()
        raise
    return source


def read_preview(
    path: str | os.PathLike[str], max_size: int, what: str = "raster", check: Any = None
) -> tuple[np.ndarray, float | None, dict | None, dict[str, str]]:
    """A whole raster decimated (nearest) to at most ``max_size`` px a side, for previews.

    Returns ``(data, nodata, colormap or None, tags)``, the tags of the dataset overlaid by
    band 1's (where class names live). ``check(dataset)`` may refuse the raster first.
    """
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError

    try:
        with open_dataset(path, what) as src:
            if check is not None:
                check(src)
            f = max(1, int(np.ceil(max(src.height, src.width) / max_size)))
            shape = (src.count, src.height // f or 1, src.width // f or 1)
            data = src.read(out_shape=shape, resampling=Resampling.nearest)
            try:
                cmap = src.colormap(1)
            except ValueError:
                cmap = None
            return data, src.nodata, cmap, {**src.tags(), **src.tags(1)}
    except RasterioError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RasterReadError(
            f"cannot read {what} {path} ({first}); check that it is a complete raster"
        ) from None


def shared_dataset(path: str, what: str = "raster") -> Any:
    """The calling thread's open rasterio handle of ``path`` (shared by tasks; never close it).

    Block tasks (evaluate's) reuse one handle per thread and file version instead of opening
    the file for every block.
    """
    key = ("dataset", os.fspath(path), _file_identity(os.fspath(path)))
    return _HANDLES.get(key, lambda: open_dataset(path, what))


def shared_warped(path: str, onto: str) -> Any:
    """The calling thread's WarpedVRT of ``path``, resampled (nearest) onto ``onto``'s grid."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    def warp() -> Any:
        src, grid = shared_dataset(path), shared_dataset(onto)
        nodata = src.nodata if src.nodata is not None else 255
        return WarpedVRT(
            src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
            resampling=Resampling.nearest, nodata=nodata,
        )  # fmt: skip

    key = ("warped", os.fspath(path), _file_identity(os.fspath(path)), os.fspath(onto))
    return _HANDLES.get(key, warp)


class _LazyFileSource(RasterSource):
    """Shared plumbing: pickles as ``(path, bands)`` (+ GDAL options and a URL's identity).

    Handles come from the process cache.
    """

    def __init__(
        self, path: str, bands: Sequence[int] | None, identity: tuple | None = None
    ) -> None:
        from geoseg.io.gdal import gdal_settings

        self._path = path
        self._bands = None if bands is None else tuple(int(b) for b in bands)
        self._key: tuple | None = None
        self._info: RasterInfo | None = None
        self._identity = identity
        self._gdal = gdal_settings()  # the opening process's GDAL options, for the workers

    @property
    def info(self) -> RasterInfo:  # type: ignore[override]
        """The raster's description (computed on first use in each process)."""
        if self._info is None:
            self._info = self._describe(self._handle())
        return self._info

    def _file_key(self) -> tuple:
        if self._key is None:
            if self._identity is None:
                self._identity = _file_identity(self._path)
            self._key = (type(self).__name__, self._path, self._bands, self._identity)
        return self._key

    def _handle(self) -> Any:
        return _HANDLES.get(self._file_key(), self._open)

    def _open(self) -> Any:
        raise NotImplementedError

    def _describe(self, handle: Any) -> RasterInfo:
        raise NotImplementedError

    def close(self) -> None:
        """Close this process's handles of the file (a later read re-opens them)."""
        if self._key is not None:
            _HANDLES.close(self._key)

    def __getstate__(self) -> dict[str, Any]:
        remote = is_gdal_url(self._path)
        if remote:
            self._file_key()
        identity = self._identity if remote else None  # a local file is stat'ed where it is read
        return {"path": self._path, "bands": self._bands, "identity": identity, "gdal": self._gdal}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from geoseg.io.gdal import apply_gdal_settings

        apply_gdal_settings(state.get("gdal") or {})  # before this process's first GDAL read
        self.__init__(state["path"], state["bands"], state.get("identity"))  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, bands={self._bands})"


class GdalSource(_LazyFileSource):
    """A rasterio-readable raster (GeoTIFF, COG, VRT, PNG, JPEG...), read window by window."""

    # the selected bands' nodata values and whether GDAL's mask is read, found at the first read
    _mask_rule: tuple[list[float | None], bool] | None = None

    def _open(self) -> Any:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        try:
            with warnings.catch_warnings(), open_env(self._path):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return rasterio.open(self._path)
        except RasterioIOError as exc:
            if gdal_base(self._path)[0] == "network":
                raise RasterReadError(
                    f"cannot open {self._path} ({one_line(exc)}); check the URL and that it "
                    "may be read (GDAL's credentials, e.g. AWS_* or GDAL_HTTP_* settings)"
                ) from None
            raise RasterReadError(
                f"{self._path} is not a readable raster ({one_line(exc)}); pass a GeoTIFF, "
                "COG, VRT, PNG/JPEG or a .zarr store"
            ) from None

    def _describe(self, src: Any) -> RasterInfo:
        check_size(src.height, src.width, self._path)
        bands = check_bands(self._bands, src.count)
        dtypes = {src.dtypes[b - 1] for b in bands}
        for dt in sorted(dtypes):
            check_dtype(dt, self._path)
        if len(dtypes) > 1:
            raise RasterReadError(
                f"{self._path}: selected bands mix dtypes {sorted(dtypes)}; expected one dtype: "
                "select bands of a single dtype with --bands"
            )
        transform = tuple(float(v) for v in tuple(src.transform)[:6])
        crs_wkt = src.crs.to_wkt() if src.crs else None
        nodata = src.nodatavals[bands[0] - 1]
        gcps, gcp_crs = src.gcps
        return RasterInfo(
            path=self._path,
            height=src.height,
            width=src.width,
            count=len(bands),
            band_indexes=bands,
            dtype=dtypes.pop(),
            crs_wkt=crs_wkt,
            transform=transform,
            nodata=None if nodata is None else float(nodata),
            georeferenced=crs_wkt is not None or not np.allclose(transform, IDENTITY),
            kind="gdal",
            gcps=tuple((g.row, g.col, g.x, g.y, g.z or 0.0) for g in gcps),
            gcp_crs_wkt=gcp_crs.to_wkt() if gcp_crs and gcps else None,
        )

    def tags(self) -> dict[str, str]:
        """The dataset's tags, overlaid by those of the first selected band."""
        band = self.info.band_indexes[0]  # first: describing the file may take a handle too
        src = self._handle()
        return {**src.tags(), **src.tags(band)}

    def probe(self) -> None:
        """Read the first and last pixel of every selected band (catches truncated files)."""
        h, w = self.info.height, self.info.width
        self.read(0, 0, 1, 1)
        self.read(h - 1, w - 1, 1, 1)

    def _read_inside(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        src = self._handle()
        window = Window(clip.col0, clip.row0, clip.col1 - clip.col0, clip.row1 - clip.row0)
        indexes = list(self.info.band_indexes)
        if self._mask_rule is None:  # rasterio asks GDAL again at every access
            self._mask_rule = ([src.nodatavals[b - 1] for b in indexes], self._needs_mask(src))
        nodatas, needs_mask = self._mask_rule
        try:
            data = src.read(indexes, window=window)
            valid = nodata_valid(data, nodatas)
            if needs_mask:
                valid &= (src.read_masks(indexes, window=window) != 0).all(axis=0)
        except RasterioError as exc:
            raise RasterReadError(
                f"cannot read window row={clip.row0} col={clip.col0} "
                f"size={window.height}x{window.width} of {self._path} ({one_line(exc)}); "
                "the file is truncated or corrupt: re-download or re-export it"
            ) from None
        return finalize(data, valid)

    def _needs_mask(self, src: Any) -> bool:
        from rasterio.enums import MaskFlags

        flags = src.mask_flag_enums
        wanted = {MaskFlags.per_dataset, MaskFlags.alpha}
        return any(wanted & set(flags[b - 1]) for b in self.info.band_indexes)


class ZarrSource(_LazyFileSource):
    """A Zarr store read through xarray/rioxarray (one ``(band, y, x)`` or ``(y, x)`` array)."""

    def _open(self) -> Any:
        import xarray as xr

        try:
            return xr.open_zarr(
                self._path,
                chunks=None,
                mask_and_scale=False,
                decode_times=False,
                decode_coords="all",
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RasterReadError(
                f"{self._path} is not a readable Zarr store ({one_line(exc)}); pass a Zarr v2/v3 "
                "store holding one (band, y, x) or (y, x) array"
            ) from None

    def _array(self, ds: Any) -> Any:
        names = [n for n, v in ds.data_vars.items() if v.ndim in (2, 3)]
        if len(names) != 1:
            raise RasterReadError(
                f"{self._path} holds {len(names)} raster arrays ({', '.join(names) or 'none'}); "
                "expected exactly one (band, y, x) or (y, x) array: write a single-array store"
            )
        da = ds[names[0]]
        return da if da.ndim == 3 else da.expand_dims("band", axis=0)

    def tags(self) -> dict[str, str]:
        """The store's and the array's attributes; lists and numbers as JSON text."""
        import json

        ds = self._handle()
        attrs = {**ds.attrs, **self._array(ds).attrs}
        return {
            str(k): v if isinstance(v, str) else json.dumps(v, default=str)
            for k, v in attrs.items()
        }

    def _describe(self, ds: Any) -> RasterInfo:
        import rioxarray  # noqa: F401  (registers .rio)

        da = self._array(ds)
        _, height, width = da.shape
        check_size(height, width, self._path)
        bands = check_bands(self._bands, da.shape[0])
        dtype = check_dtype(str(da.dtype), self._path)
        crs = da.rio.crs or ds.rio.crs
        transform = tuple(float(v) for v in tuple(da.rio.transform())[:6])
        nodata = da.rio.nodata
        return RasterInfo(
            path=self._path,
            height=height,
            width=width,
            count=len(bands),
            band_indexes=bands,
            dtype=dtype,
            crs_wkt=crs.to_wkt() if crs else None,
            transform=transform,
            nodata=None if nodata is None else float(nodata),
            georeferenced=crs is not None or not np.allclose(transform, IDENTITY),
            kind="zarr",
        )

    def _read_inside(self, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        da = self._array(self._handle())
        info = self.info
        idx = [b - 1 for b in info.band_indexes]
        try:
            data = np.asarray(da[idx, clip.row0 : clip.row1, clip.col0 : clip.col1].values)
        except (OSError, ValueError, RuntimeError) as exc:
            raise RasterReadError(
                f"cannot read window row={clip.row0} col={clip.col0} of {self._path} "
                f"({one_line(exc)}); the store is corrupt: re-create it"
            ) from None
        valid = nodata_valid(data, [info.nodata] * len(idx))
        return finalize(data, valid)


def _is_zarr(path: str) -> bool:
    return path.rstrip("/\\").lower().endswith(".zarr")


def check_input_file(
    path: str | os.PathLike[str], what: str = "input", folder_ok: bool = False
) -> Path:
    """Refuse an input that is missing, a folder (unless ``folder_ok``) or no regular file.

    GDAL opening a FIFO or a device blocks forever (or reads an endless stream), so only
    regular files (and, with ``folder_ok``, folders such as ``.zarr`` stores) are opened. A
    GDAL URL (:func:`is_gdal_url`) is not checked here: GDAL says when it is missing (and
    ``Path`` would mangle it, so pass on the original text, not the returned path).

    Raises
    ------
    RasterReadError
        The path does not exist, is a folder, or is a FIFO, socket or device.
    """
    p = Path(path)
    if is_gdal_url(path):
        return p
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise RasterReadError(f"{what} {p} does not exist; check the path") from None
    except OSError as exc:
        raise RasterReadError(f"cannot read {what} {p} ({exc.strerror}); check the path") from None
    if stat.S_ISDIR(mode) and not folder_ok:
        raise RasterReadError(f"{what} {p} is a directory; expected a raster file")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise RasterReadError(
            f"{what} {p} is not a regular file (a FIFO, socket or device); pass a raster file"
        )
    return p


def raster_files(path: str | os.PathLike[str] | None) -> list[str]:
    """Every file GDAL reads for the raster ``path``: the file itself and its sidecars.

    The ``.aux.xml`` sidecar is listed whether it exists or not (GDAL reads one written later
    as part of the raster), plus whatever GDAL reports (overviews, masks, world files), so that
    no output of a command ever replaces a part of one of its inputs. A GDAL URL is listed
    alone (no output can be written there; the guards compare a ``/vsizip/`` path's local
    archive), and a STAC input with the files of its assets.
    """
    if path is None or not os.fspath(path):
        return []
    text = os.fspath(path)
    from geoseg.io import stac

    if stac.is_stac_path(text):
        return stac.stac_files(text)
    if is_gdal_url(text):
        return [text]
    out = [text, f"{text}.aux.xml"]
    try:
        regular = stat.S_ISREG(os.stat(text).st_mode)
    except OSError:
        return out
    if regular:
        import rasterio
        from rasterio.errors import RasterioError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(text) as src:
                    out += [f for f in src.files if f not in out]
        except RasterioError:
            pass
    return out


def open_raster(path: str | os.PathLike[str], bands: Sequence[int] | None = None) -> RasterSource:
    """Open a raster for windowed reading and validate it up front.

    Parameters
    ----------
    path : path-like
        Any rasterio-readable file (GeoTIFF, COG, JPEG, PNG, VRT...) or a ``.zarr`` store.
    bands : sequence of int, optional
        1-based band indexes to read (default: all).

    Returns
    -------
    RasterSource
        A picklable source; :attr:`RasterSource.info` describes it.

    Raises
    ------
    RasterReadError
        Missing, empty, corrupt or truncated file, not a raster, zero-size raster or an
        unsupported dtype.
    InputError
        A band index out of range.
    """
    text = os.fspath(path)
    if is_gdal_url(text) and not _is_zarr(text):
        return _probed(GdalSource(text, bands))
    p = check_input_file(text, "input raster", folder_ok=True)
    if p.is_file() and p.stat().st_size == 0:
        raise RasterReadError(f"input raster {text} is an empty file (0 bytes): pass a raster")
    if _is_zarr(text):
        source: _LazyFileSource = ZarrSource(text, bands)
        source.info  # noqa: B018  (validates)
        return source
    if p.is_dir():
        raise RasterReadError(
            f"input {text} is a directory; expected a raster file or a .zarr store"
        )
    for part in raster_files(text)[2:]:  # a VRT's sources, overviews, masks: GDAL reads them
        if os.path.lexists(part):
            check_input_file(part, f"file {part} of input raster", folder_ok=True)
    return _probed(GdalSource(text, bands))


def _probed(gdal: GdalSource) -> GdalSource:
    """``gdal`` once its first and last pixels read (closed again when they do not)."""
    try:
        gdal.probe()
    except BaseException:
        gdal.close()
        raise
    return gdal


# --------------------------------------------------------------------------------------------
# Inputs as predict opens them: STAC items, user scaling, a sample of the values
# --------------------------------------------------------------------------------------------


class ScaledSource(RasterSource):
    """Another source's values mapped to ``raw * scale + offset`` per band (``--scale``).

    Physical units (reflectance from digital numbers, a STAC item's ``raster:bands``) are
    applied here, before the engine's own scaling and normalization of the model's inputs.

    Parameters
    ----------
    inner : RasterSource
        The source read.
    scale, offset : sequence of float
        One value per band of ``inner``.
    """

    def __init__(self, inner: RasterSource, scale: Sequence[float], offset: Sequence[float]):
        self.inner = inner
        self.scale = np.asarray(scale, np.float32).reshape(-1, 1, 1)
        self.offset = np.asarray(offset, np.float32).reshape(-1, 1, 1)

    @property
    def info(self) -> RasterInfo:  # type: ignore[override]
        """The inner source's description."""
        return self.inner.info

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of the inner source and scale it (see :meth:`RasterSource.read`)."""
        data, valid = self.inner.read(row, col, height, width)
        return data * self.scale + self.offset, valid

    def read_windows(self, windows: Sequence[Window]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Read windows of the inner source and scale them (:meth:`RasterSource.read_windows`)."""
        return [(d * self.scale + self.offset, v) for d, v in self.inner.read_windows(windows)]

    def tags(self) -> dict[str, str]:
        """The inner source's tags."""
        return self.inner.tags()

    def close(self) -> None:
        """Close the inner source."""
        self.inner.close()

    def __repr__(self) -> str:
        return f"ScaledSource({self.inner!r}, scale={self.scale.ravel().tolist()})"


def band_values(values: Sequence[float] | None, count: int, what: str, default: float) -> list:
    """``scale``/``offset`` values for ``count`` bands: one for all, or one per band.

    ``what`` is the option (``"scale"``, ``"offset"``), named by the error's ``option``.
    """
    if values is None:
        return [default] * count
    values = [float(v) for v in values]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise InputError(
            f"{what} gives {len(values)} values for {count} bands; give one value for every "
            f"band or {count} comma-separated values (one per band read)",
            option=what,
        )
    return values


def scaled(
    source: RasterSource,
    scale: Sequence[float] | None,
    offset: Sequence[float] | None,
) -> RasterSource:
    """``source`` with ``raw * scale + offset`` applied, or itself when that changes nothing."""
    count = source.info.count
    s = band_values(scale, count, "scale", 1.0)
    o = band_values(offset, count, "offset", 0.0)
    if all(v == 1.0 for v in s) and all(v == 0.0 for v in o):
        return source
    return ScaledSource(source, s, o)


def open_input(
    path: str | os.PathLike[str],
    bands: Sequence[int] | None = None,
    assets: Sequence[str] | None = None,
    scale: Sequence[float] | None = None,
    offset: Sequence[float] | None = None,
) -> RasterSource:
    """Open what ``geoseg predict`` reads: a raster, a GDAL URL or a STAC item's assets.

    A STAC item's ``raster:bands`` scale and offset apply unless ``scale``/``offset`` are
    given (each replaces the item's).

    Parameters
    ----------
    path : path-like
        See :func:`open_raster`; or a STAC item / ``FILE#ITEM_ID`` (:mod:`geoseg.io.stac`).
    bands : sequence of int, optional
        1-based bands to read (of the STAC stack, in ``assets`` order).
    assets : sequence of str, optional
        The STAC assets to stack (required for a STAC input, refused for a raster).
    scale, offset : sequence of float, optional
        ``raw * scale + offset`` per band (one value for all bands, or one per band read).
    """
    from geoseg.errors import ConfigError
    from geoseg.io import stac

    text = os.fspath(path)
    if stac.is_stac_path(text):
        source, item_scale, item_offset = stac.open_item(text, assets, bands)
        scale = item_scale if scale is None else scale
        offset = item_offset if offset is None else offset
    elif assets:
        raise ConfigError(
            f"assets {','.join(assets)[:80]!r} picks the assets of a STAC item, and {text} is a "
            "raster; drop assets (or use --bands to pick its bands)",
            option="assets",
        )
    else:
        source = open_raster(text, bands)
    try:
        return scaled(source, scale, offset)
    except BaseException:
        source.close()
        raise


SAMPLE_WINDOWS = 5
SAMPLE_SIDE = 256


def sample_range(source: RasterSource) -> tuple[list[float], list[float]] | None:
    """Per-band minimum and maximum of the valid pixels of a few windows, or None if none.

    The centre and the four quadrant centres (256 px each): a cheap look at a raster of any
    size, local or remote, enough to tell 8-bit from 16-bit values or reflectance. Each window
    starts at a multiple of 256 px, so that it lies in one block of a GeoTIFF or Zarr tiled in
    256 px or any power of two above (one block decoded per window, not four).
    """
    info = source.info
    side = SAMPLE_SIDE
    spots = [(0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)]
    lo = np.full(info.count, np.inf)
    hi = np.full(info.count, -np.inf)
    seen: set[tuple[int, int]] = set()
    for fy, fx in spots[:SAMPLE_WINDOWS]:
        row = max(0, min(int(info.height * fy) - side // 2, info.height - side)) // side * side
        col = max(0, min(int(info.width * fx) - side // 2, info.width - side)) // side * side
        if (row, col) in seen:
            continue
        seen.add((row, col))
        data, valid = source.read(row, col, min(side, info.height), min(side, info.width))
        if valid.any():
            # where every pixel is valid a reshape, not a copy by boolean selection
            values = data.reshape(len(data), -1) if valid.all() else data[:, valid]
            lo = np.minimum(lo, values.min(axis=1))
            hi = np.maximum(hi, values.max(axis=1))
    if not np.isfinite(hi).all():
        return None
    return lo.tolist(), hi.tolist()
