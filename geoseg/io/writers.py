"""Class-map writers: tiled GeoTIFF/COG and Zarr v3, written block by block, committed atomically.

Every writer builds its output under a temporary name in the target's directory and moves it
into place with ``os.replace`` only in :meth:`ClassMapWriter.commit`; :meth:`abort` (or an
exception inside the ``with`` block) deletes the temporaries, so a failed run leaves nothing.
Blocks are written as they arrive (GDAL windowed writes, Zarr region writes): the full raster
is never held in memory.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError, OutputError, OutputExistsError
from geoseg.io.files import (
    atomic_write,
    check_target,
    fsync_path,
    install,
    refuse_inputs,
    remove_ours,
    reserve_temp,
    temp_dir,
)

log = logging.getLogger(__name__)

FORMATS = {".tif": "gtiff", ".tiff": "gtiff", ".zarr": "zarr"}
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
PROB_NODATA = 255
# how a refused --resume tells the user to begin again (a plain rerun keeps the partial run)
START_OVER = "start over with --overwrite instead of --resume"

__all__ = [
    "FORMATS",
    "ClassMapWriter",
    "GeoTiffWriter",
    "OutputSpec",
    "ZarrWriter",
    "check_output",
    "geoseg_output_kind",
    "is_geoseg_output",
    "open_writer",
    "output_paths",
    "partial_files",
    "probabilities_path",
    "quantize_probs",
    "read_pam",
    "rows_digest",
]


@dataclass(frozen=True)
class OutputSpec:
    """Geometry and legend of a class map.

    Attributes
    ----------
    height, width : int
        Output size in pixels (the input's).
    crs_wkt : str or None
        CRS of the input (None: write none).
    transform : tuple of float
        Affine ``(a, b, c, d, e, f)`` of the input.
    georeferenced : bool
        False: no CRS or transform is written.
    class_names : list of str
        Name of each class id.
    colours : list of (int, int, int)
        RGB colour of each class id.
    block_size : int
        Internal tiling (GeoTIFF tiles, Zarr chunks); a multiple of 16.
    cog : bool
        GeoTIFF only: write a Cloud-Optimized GeoTIFF with mode-resampled overviews.
    probabilities : bool
        Also store per-class probabilities (uint8-quantized).
    extra_tags : dict
        More band tags of the class map.
    gcps : tuple of (row, col, x, y, z)
        Ground control points of an input georeferenced by them alone, carried over.
    gcp_crs_wkt : str or None
        Their CRS.
    """

    height: int
    width: int
    crs_wkt: str | None
    transform: tuple[float, ...]
    georeferenced: bool
    class_names: list[str]
    colours: list[tuple[int, int, int]]
    block_size: int = 512
    cog: bool = False
    probabilities: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)
    gcps: tuple[tuple[float, ...], ...] = ()
    gcp_crs_wkt: str | None = None

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"output size {self.height}x{self.width} is empty; expected >= 1x1")
        if not self.class_names:
            raise InputError("class_names is empty; expected one name per class")
        if len(self.colours) != len(self.class_names):
            raise InputError(
                f"{len(self.colours)} colours for {len(self.class_names)} classes; expected one "
                "RGB colour per class name"
            )
        if self.block_size < 16 or self.block_size % 16:
            raise InputError(
                f"block_size {self.block_size} is not a positive multiple of 16; use e.g. 512"
            )
        if len(self.class_names) > 65535:
            raise InputError(f"{len(self.class_names)} classes; at most 65535 can be written")

    @property
    def dtype(self) -> str:
        """``"uint8"`` up to 255 classes, else ``"uint16"``."""
        return "uint8" if len(self.class_names) <= 255 else "uint16"

    @property
    def nodata(self) -> int:
        """255 for uint8 class maps, 65535 for uint16."""
        return 255 if self.dtype == "uint8" else 65535


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def quantize_probs(probs: np.ndarray, classes: np.ndarray, nodata: int) -> np.ndarray:
    """Quantize probabilities to uint8 ``round(p * 255)``; 255 where ``classes`` is nodata.

    Parameters
    ----------
    probs : ndarray
        ``(C, h, w)`` float in [0, 1].
    classes : ndarray
        ``(h, w)`` class map of the same block.
    nodata : int
        The class map's nodata value.

    Returns
    -------
    ndarray
        ``(C, h, w)`` uint8.
    """
    out = np.rint(np.clip(np.nan_to_num(probs, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    out[:, classes == nodata] = PROB_NODATA
    return out


def colormap(colours: list[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    """Palette entries for rasterio's ``write_colormap`` (nodata stays unlisted: transparent)."""
    return {i: (int(r), int(g), int(b), 255) for i, (r, g, b) in enumerate(colours)}


def gcp_objects(spec: OutputSpec) -> tuple[list[Any], Any]:
    """The spec's ground control points as rasterio ``GroundControlPoint``s, with their CRS."""
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    points = [GroundControlPoint(row, col, x, y, z) for row, col, x, y, z in spec.gcps]
    return points, CRS.from_wkt(spec.gcp_crs_wkt) if spec.gcp_crs_wkt else None


def pixel_centres(transform: tuple[float, ...], height: int, width: int) -> tuple[Any, Any]:
    """``(y, x)`` coordinates of pixel centres along the first column and row."""
    a, b, c, d, e, f = transform[:6]
    cols, rows = np.arange(width) + 0.5, np.arange(height) + 0.5
    return f + e * rows + d * 0.5, c + a * cols + b * 0.5


def probabilities_path(path: str | os.PathLike[str]) -> Path:
    """The GeoTIFF probabilities sidecar: ``<stem>_probabilities.tif`` beside the class map."""
    p = Path(path)
    return p.with_name(f"{p.stem}_probabilities{p.suffix}")


def output_format(path: str | os.PathLike[str]) -> str:
    """``"gtiff"`` or ``"zarr"`` from the extension; InputError for anything else."""
    suffix = Path(os.fspath(path).rstrip("/\\")).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"output {os.fspath(path)} has an unsupported extension {suffix or '(none)'!r}; "
            "expected one of .tif .tiff .zarr"
        )
    return FORMATS[suffix]


# --------------------------------------------------------------------------------------------
# Pre-flight checks
# --------------------------------------------------------------------------------------------


def output_paths(path: str | os.PathLike[str], probabilities: bool = False) -> list[Path]:
    """Every path a class-map output writes.

    The map, and for GeoTIFF its PAM sidecar, plus the probabilities file and its sidecar when
    asked for: each is checked against the inputs.
    """
    from geoseg.io.gdal_meta import sidecar_path

    target = Path(os.fspath(path).rstrip("/\\"))
    if output_format(target) == "zarr":
        return [target]
    paths = [target, sidecar_path(target)]
    if probabilities:
        prob = probabilities_path(target)
        paths += [prob, sidecar_path(prob)]
    return paths


def touched_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Every path writing ``path`` may replace or remove.

    :func:`output_paths` with the probabilities file, which a new class map without
    probabilities removes when it is a stale one of geoseg's.
    """
    return output_paths(path, probabilities=output_format(path) == "gtiff")


def geoseg_output_kind(path: str | os.PathLike[str]) -> str | None:
    """``"classes"``, ``"probabilities"`` or ``"zarr"`` for an output geoseg wrote, else None.

    Recognised by what geoseg writes into them (the ``CLASS_NAMES`` band tag, the probabilities'
    ``QUANTIZATION`` tag, the Zarr ``classes`` array's ``class_names`` attribute), so that
    ``--overwrite`` never replaces, and a stale sidecar is never removed, unless it is ours.
    """
    p = Path(path)
    if p.is_symlink():
        return None
    if p.is_dir():
        try:
            meta = json.loads((p / "classes" / "zarr.json").read_text())
        except (OSError, ValueError, RecursionError):
            return None
        ours = isinstance(meta, dict) and "class_names" in (meta.get("attributes") or {})
        return "zarr" if ours else None
    if not p.is_file():
        return None
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(p) as src:
                if "CLASS_NAMES" in src.tags(1):
                    return "classes"
                return "probabilities" if "QUANTIZATION" in src.tags() else None
    except RasterioError:
        return None


def is_geoseg_output(path: str | os.PathLike[str]) -> bool:
    """True for a class map, probabilities file or Zarr store that geoseg wrote."""
    return geoseg_output_kind(path) is not None


def partial_files(partial_dir: Path, probabilities: bool = False) -> list[Path]:
    """The files of a resumable GeoTIFF output in its partial folder: classes, probabilities."""
    return [partial_dir / "classes.tif"] + (
        [partial_dir / "probabilities.tif"] if probabilities else []
    )


def combined_digest(hashers: Iterable[Any]) -> str:
    """One SHA-256 over the per-file hashes of a block row (classes, probabilities)."""
    import hashlib

    return hashlib.sha256("".join(h.hexdigest() for h in hashers).encode()).hexdigest()


def rows_digest(paths: Iterable[Path], row0: int, row1: int, block_size: int) -> str:
    """Digest of rows ``[row0, row1)`` of each GeoTIFF, read back from disk block by block.

    Equal to :meth:`GeoTiffWriter.take_row_digest` of the blocks (``block_size`` wide) that
    were written there, so that ``--resume`` refuses partial files that do not hold what the
    recorded progress says.
    """
    import hashlib

    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    hashers = []
    for path in paths:
        digest = hashlib.sha256()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    if not 0 <= row0 < row1 <= src.height:
                        raise OutputError(f"rows {row0}..{row1} are outside {path}")
                    for col in range(0, src.width, block_size):
                        width = min(block_size, src.width - col)
                        data = src.read(window=Window(col, row0, width, row1 - row0))
                        digest.update(np.ascontiguousarray(data).tobytes())
        except RasterioError as exc:
            raise OutputError(f"cannot read back {path} ({exc}); {START_OVER}") from None
        hashers.append(digest)
    return combined_digest(hashers)


def check_output(
    path: str | os.PathLike[str],
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    probabilities: bool = False,
    what: str = "output",
) -> str:
    """Refuse an output before any work is done.

    Parameters
    ----------
    path : path-like
        The class map to write (``.tif``, ``.tiff`` or ``.zarr``).
    overwrite : bool
        Allow replacing an existing output that geoseg wrote.
    inputs : iterable of path-like
        Everything the command reads; no file the output writes (class map, sidecars,
        probabilities) may be one of them, with or without ``overwrite``.
    probabilities : bool
        Also check the GeoTIFF probabilities file.
    what : str
        How messages name the output (the option, e.g. ``"--error-map"``).

    Returns
    -------
    str
        ``"gtiff"`` or ``"zarr"``.

    Raises
    ------
    InputError
        Unknown extension, or an output file is an input.
    OutputExistsError
        An output exists and ``overwrite`` is False.
    OutputError
        A link, a missing or unwritable directory, the wrong kind of path, or an existing
        output geoseg did not write.
    """
    fmt = output_format(path)
    inputs = list(inputs)
    for p in touched_paths(path):
        refuse_inputs(p, inputs, what)
    paths = output_paths(path, probabilities)
    kinds = {0: "zarr" if fmt == "zarr" else "classes", 2: "probabilities"}
    for i, p in enumerate(paths):
        label = what if i == 0 else f"{what} sidecar"
        check_target(p, overwrite=overwrite, what=label, folder=fmt == "zarr")
        if i in kinds and p.exists() and geoseg_output_kind(p) != kinds[i]:
            raise OutputError(
                f"{p} exists and is not a {kinds[i]} output geoseg wrote; --overwrite only "
                "replaces geoseg's own outputs: remove it yourself or choose another output path"
            )
    return fmt


def read_pam(aux: Path) -> str | None:
    """The text of GDAL's PAM sidecar ``aux`` of a file being written, validated (or None).

    A partial run's sidecar could have been edited: it must be a regular file of at most
    1 MiB holding a ``PAMDataset`` document, else OutputError.
    """
    from geoseg.io.gdal_meta import pam_with_categories

    if not os.path.lexists(aux):
        return None
    try:
        if aux.is_symlink() or not aux.is_file() or aux.stat().st_size > 2**20:
            raise ValueError("not a regular file of at most 1 MiB")
        text = aux.read_bytes().decode()
        pam_with_categories([], text)
    except (ValueError, OSError) as exc:
        raise OutputError(
            f"{aux} is unusable ({exc}); {START_OVER}"
        ) from None
    return text


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


class ClassMapWriter:
    """Base writer: validation of blocks, context management, commit/abort bookkeeping.

    Parameters
    ----------
    path : path-like
        Final output path.
    spec : OutputSpec
        Geometry and legend.
    overwrite : bool
        Replace an existing output at commit.
    """

    def __init__(self, path: str | os.PathLike[str], spec: OutputSpec, overwrite: bool) -> None:
        self.path = Path(os.fspath(path).rstrip("/\\"))
        self.spec = spec
        self.overwrite = overwrite
        self._done = False
        self._temps: list[Path] = []

    # -- public API ---------------------------------------------------------------------------

    def write(
        self, row: int, col: int, classes: np.ndarray, probs: np.ndarray | None = None
    ) -> None:
        """Write one block of the class map (and its probabilities).

        Parameters
        ----------
        row, col : int
            Top-left pixel of the block in the output.
        classes : ndarray
            ``(h, w)`` class ids, ``spec.nodata`` where nothing was predicted.
        probs : ndarray, optional
            ``(C, h, w)`` float32 probabilities in [0, 1]; required when
            ``spec.probabilities`` is set, ignored otherwise.
        """
        if self._done:
            raise OutputError(f"writer for {self.path} is already closed; open a new one")
        classes = self._check_block(row, col, classes)
        q = None
        if self.spec.probabilities:
            q = self._check_probs(classes, probs)
        self._write_block(row, col, classes, q)

    def commit(self) -> None:
        """Finalize and move the output into place (replacing an old one if ``overwrite``)."""
        if self._done:
            return
        try:
            self._finalize()
            self._install()
        except BaseException:
            self.abort()
            raise
        self._done = True

    def flush(self) -> None:
        """Make the blocks written so far durable (a no-op where writes already are)."""

    def abort(self) -> None:
        """Drop everything written so far; the target is left as it was."""
        from geoseg.io.gdal_meta import sidecar_path

        self._done = True
        self._close_handles()
        for temp in self._temps:
            remove_ours(temp)
            remove_ours(sidecar_path(temp))  # GDAL's PAM file of the temporary, if any

    def __enter__(self) -> ClassMapWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- checks ---------------------------------------------------------------------------------

    def _check_block(self, row: int, col: int, classes: np.ndarray) -> np.ndarray:
        classes = np.asarray(classes)
        h, w = classes.shape if classes.ndim == 2 else (-1, -1)
        if h < 0 or row < 0 or col < 0 or row + h > self.spec.height or col + w > self.spec.width:
            raise InputError(
                f"block at row={row} col={col} shape={classes.shape} does not fit the "
                f"{self.spec.height}x{self.spec.width} output; expected a 2-D block inside it"
            )
        return classes.astype(self.spec.dtype, copy=False)

    def _check_probs(self, classes: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
        k = len(self.spec.class_names)
        if probs is None or np.shape(probs) != (k, *classes.shape):
            raise InputError(
                f"probabilities of shape {None if probs is None else np.shape(probs)} for a "
                f"{classes.shape} block; expected ({k}, {classes.shape[0]}, {classes.shape[1]})"
            )
        return quantize_probs(np.asarray(probs), classes, self.spec.nodata)

    def _temp(self, suffix: str) -> Path:
        """A temporary file beside the output, created exclusively (see geoseg.io.files)."""
        path = reserve_temp(self.path, suffix)
        self._temps.append(path)
        return path

    # -- format specific ------------------------------------------------------------------------

    def _write_block(self, row: int, col: int, classes: np.ndarray, q: np.ndarray | None) -> None:
        raise NotImplementedError

    def _finalize(self) -> None:
        raise NotImplementedError

    def _install(self) -> None:
        raise NotImplementedError

    def _close_handles(self) -> None:
        raise NotImplementedError


class GeoTiffWriter(ClassMapWriter):
    """Tiled, compressed GeoTIFF (optionally COG) with palette, nodata and category names.

    With ``partial_dir`` the temporary files live there under fixed names and survive a
    failure (``abort`` keeps them), so a killed job can be resumed: ``resume=True`` reopens
    them for update, and :meth:`flush` makes the blocks written so far durable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: OutputSpec,
        overwrite: bool,
        partial_dir: Path | None = None,
        resume: bool = False,
    ) -> None:
        super().__init__(path, spec, overwrite)
        from geoseg.io.gdal_meta import best_compression

        self._compress = best_compression()
        self._partial = partial_dir
        if partial_dir is None:
            self._main_tmp = self._temp(".tif")
            self._prob_tmp = self._temp(".tif") if spec.probabilities else None
        else:
            self._main_tmp, *rest = partial_files(partial_dir, spec.probabilities)
            self._prob_tmp = rest[0] if rest else None
        self._dst = self._prob = None
        self._hashers = self._new_hashers()
        try:  # an interrupt before the `with` block is entered must not leave the temporaries
            self._open_files(resume)
        except BaseException:
            self.abort()
            raise

    def _open_files(self, resume: bool) -> None:
        spec = self.spec
        if resume:
            self._dst = self._reopen(self._main_tmp)
            self._prob = self._reopen(self._prob_tmp) if self._prob_tmp is not None else None
            return
        self._dst = self._open(self._main_tmp, 1, spec.dtype, spec.nodata)
        if self._prob_tmp is not None:
            self._prob = self._open(self._prob_tmp, len(spec.class_names), "uint8", PROB_NODATA)
        self._describe()

    def _reopen(self, path: Path) -> Any:
        import rasterio
        from rasterio.errors import RasterioError

        try:
            return rasterio.open(path, "r+")
        except RasterioError as exc:
            raise OutputError(
                f"cannot resume {self.path}: its partial file {path} is unreadable ({exc}); "
                f"{START_OVER}"
            ) from None

    def flush(self) -> None:
        """Make every block written so far durable (close, fsync and reopen the files)."""
        self._close_handles()
        for path in (self._main_tmp, self._prob_tmp):
            if path is not None:
                fsync_path(path)
        self._dst = self._reopen(self._main_tmp)
        if self._prob_tmp is not None:
            self._prob = self._reopen(self._prob_tmp)

    def take_row_digest(self) -> str:
        """Digest of the blocks written since the last call (one block row, left to right).

        Hashed from the bytes handed to GDAL, so recording progress costs no read-back;
        :func:`rows_digest` recomputes it from the files on ``--resume``.
        """
        digest = combined_digest(self._hashers)
        self._hashers = self._new_hashers()
        return digest

    def _new_hashers(self) -> list[Any]:
        import hashlib

        return [hashlib.sha256() for _ in range(1 + (self._prob_tmp is not None))]

    def abort(self) -> None:
        """Drop the output; with a partial directory, keep its files for ``--resume``.

        Temporaries beside the output (a COG being assembled) are removed either way.
        """
        from geoseg.io.gdal_meta import sidecar_path

        if self._partial is None:
            super().abort()
            return
        self._done = True
        self._close_handles()
        for temp in self._temps:
            if self._partial not in temp.parents:
                remove_ours(temp)
                remove_ours(sidecar_path(temp))

    def _profile(self, count: int, dtype: str, nodata: int) -> dict[str, Any]:
        s = self.spec
        profile: dict[str, Any] = dict(
            driver="GTiff",
            height=s.height,
            width=s.width,
            count=count,
            dtype=dtype,
            nodata=nodata,
            tiled=True,
            blockxsize=s.block_size,
            blockysize=s.block_size,
            compress=self._compress,
            BIGTIFF="IF_SAFER",
        )
        if s.georeferenced:
            from affine import Affine

            if s.crs_wkt:
                profile["crs"] = s.crs_wkt
            profile["transform"] = Affine(*s.transform[:6])
        if count == 1:
            profile["photometric"] = "palette"
        return profile

    def _open(self, path: Path, count: int, dtype: str, nodata: int) -> Any:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return rasterio.open(path, "w", **self._profile(count, dtype, nodata))
        except RasterioError as exc:
            raise OutputError(f"cannot create {path}: {exc}; check the disk and path") from None

    def _describe(self) -> None:
        s = self.spec
        names = json.dumps(list(s.class_names))
        colours = json.dumps([list(map(int, c)) for c in s.colours])
        self._dst.write_colormap(1, colormap(s.colours))
        self._dst.update_tags(1, CLASS_NAMES=names, CLASS_COLOURS=colours, **s.extra_tags)
        self._dst.set_band_description(1, "class")
        if s.gcps:
            for handle in (self._dst, self._prob):
                if handle is not None:
                    handle.gcps = gcp_objects(s)
        if self._prob is not None:
            for i, name in enumerate(s.class_names, start=1):
                self._prob.set_band_description(i, name)
            self._prob.update_tags(QUANTIZATION="round(p*255); 255 where the class map is nodata")

    def _write_block(self, row: int, col: int, classes: np.ndarray, q: np.ndarray | None) -> None:
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        window = Window(col, row, classes.shape[1], classes.shape[0])
        try:
            self._dst.write(classes, 1, window=window)
            self._hashers[0].update(np.ascontiguousarray(classes).tobytes())
            if q is not None and self._prob is not None:
                self._prob.write(q, window=window)
                self._hashers[1].update(np.ascontiguousarray(q).tobytes())
        except RasterioError as exc:
            raise OutputError(
                f"cannot write block row={row} col={col} to {self.path}: {exc}; check free disk "
                "space"
            ) from None

    def _close_handles(self) -> None:
        for handle in (getattr(self, "_dst", None), getattr(self, "_prob", None)):
            if handle is not None and not handle.closed:
                handle.close()

    def _finalize(self) -> None:
        from geoseg.io.gdal_meta import pam_with_categories, sidecar_path

        self._close_handles()
        if self.spec.cog:
            self._main_tmp = self._to_cog(self._main_tmp, "MODE")
            if self._prob_tmp is not None:
                self._prob_tmp = self._to_cog(self._prob_tmp, "AVERAGE")
        aux = sidecar_path(self._main_tmp)
        self._temps.append(aux)
        pam = pam_with_categories(list(self.spec.class_names), read_pam(aux))
        atomic_write(aux, pam)

    def _to_cog(self, src: Path, resampling: str) -> Path:
        from rasterio.errors import RasterioError
        from rasterio.shutil import copy as rio_copy

        dst = self._temp(".tif")
        try:
            rio_copy(
                src,
                dst,
                driver="COG",
                BLOCKSIZE=self.spec.block_size,
                COMPRESS=self._compress,
                RESAMPLING=resampling,
                OVERVIEW_RESAMPLING=resampling,
                BIGTIFF="IF_SAFER",
            )
        except RasterioError as exc:
            raise OutputError(f"cannot write the COG {self.path}: {exc}") from None
        if src in self._temps:  # a partial folder's file stays until the run is done
            remove_ours(src)
        return dst

    def _install(self) -> None:
        from geoseg.io.gdal_meta import sidecar_path

        if self.path.exists() and not self.overwrite:
            raise OutputExistsError(
                f"output {self.path} already exists: pass --overwrite to replace it"
            )
        prob_final = probabilities_path(self.path)
        if self._prob_tmp is not None:
            install(self._prob_tmp, prob_final)
            remove_ours(sidecar_path(prob_final))
        elif prob_final.exists():
            self._drop_stale_probabilities(prob_final)
        install(sidecar_path(self._main_tmp), sidecar_path(self.path))
        install(self._main_tmp, self.path)

    def _drop_stale_probabilities(self, prob_final: Path) -> None:
        """Remove probabilities that described the class map being replaced, if geoseg's own."""
        from geoseg.io.gdal_meta import sidecar_path

        if self.overwrite and geoseg_output_kind(prob_final) == "probabilities":
            log.info("removing %s, left by an earlier run over %s", prob_final, self.path)
            remove_ours(prob_final)
            remove_ours(sidecar_path(prob_final))
        else:
            log.warning("%s is left as it is; it does not describe the new map", prob_final)


class ZarrWriter(ClassMapWriter):
    """Zarr v3 store of ``classes`` (y, x) and optional ``probabilities`` (class, y, x).

    Chunked ``block_size``, with a rioxarray ``spatial_ref`` coordinate so that plain
    ``xarray.open_zarr(...).rio`` sees the CRS and transform.
    """

    def __init__(self, path: str | os.PathLike[str], spec: OutputSpec, overwrite: bool) -> None:
        super().__init__(path, spec, overwrite)
        self._tmp_dir = temp_dir(self.path)
        self._temps.append(self._tmp_dir)
        self._tmp = self._tmp_dir / "store.zarr"
        try:  # an interrupt before the `with` block is entered must not leave the temporary
            self._create()
            import zarr

            group = zarr.open_group(self._tmp, mode="r+")
        except BaseException:
            self.abort()
            raise
        self._classes = group["classes"]
        self._probs = group["probabilities"] if spec.probabilities else None

    def _template(self) -> Any:
        import dask.array as da
        import rioxarray  # noqa: F401  (registers .rio)
        import xarray as xr

        s = self.spec
        bs = s.block_size
        y, x = pixel_centres(s.transform if s.georeferenced else IDENTITY, s.height, s.width)
        attrs = {
            "class_names": list(s.class_names),
            "class_colours": [list(map(int, c)) for c in s.colours],
            "nodata": s.nodata,
            "long_name": "class",
            **s.extra_tags,
        }
        classes = da.full((s.height, s.width), s.nodata, dtype=s.dtype, chunks=bs)
        ds = xr.Dataset({"classes": (("y", "x"), classes, attrs)}, coords={"y": y, "x": x})
        if s.probabilities:
            k = len(s.class_names)
            probs = da.full((k, s.height, s.width), PROB_NODATA, dtype="uint8", chunks=(k, bs, bs))
            ds["probabilities"] = (
                ("class", "y", "x"),
                probs,
                {
                    "class_names": list(s.class_names),
                    "nodata": PROB_NODATA,
                    "quantization": "round(p*255); 255 where the class map is nodata",
                },
            )
            ds = ds.assign_coords({"class": np.arange(k)})
        if s.georeferenced:
            from affine import Affine

            if s.crs_wkt:
                ds = ds.rio.write_crs(s.crs_wkt)
            ds = ds.rio.write_transform(Affine(*s.transform[:6]))
        elif s.gcps:
            gcps, crs = gcp_objects(s)
            ds = ds.rio.write_gcps(gcps, crs)
        return ds

    def _create(self) -> None:
        ds = self._template()
        bs = self.spec.block_size
        k = len(self.spec.class_names)
        encoding: dict[str, dict[str, Any]] = {
            "classes": {"chunks": (bs, bs), "fill_value": self.spec.nodata},
        }
        if "probabilities" in ds:
            encoding["probabilities"] = {"chunks": (k, bs, bs), "fill_value": PROB_NODATA}
        if "spatial_ref" in ds.coords:
            # plain xarray.open_zarr then returns spatial_ref as a coordinate, as rioxarray needs
            for name in encoding:
                ds[name].encoding["coordinates"] = "spatial_ref"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec
                ds.to_zarr(
                    self._tmp,
                    mode="w-",
                    compute=False,
                    zarr_format=3,
                    consolidated=True,
                    encoding=encoding,
                )
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot create the Zarr store {self._tmp}: {exc}") from None

    def _write_block(self, row: int, col: int, classes: np.ndarray, q: np.ndarray | None) -> None:
        h, w = classes.shape
        try:
            self._classes[row : row + h, col : col + w] = classes
            if q is not None and self._probs is not None:
                self._probs[:, row : row + h, col : col + w] = q
        except OSError as exc:
            raise OutputError(
                f"cannot write block row={row} col={col} to {self.path}: {exc}; check free disk "
                "space"
            ) from None

    def _close_handles(self) -> None:
        """Zarr arrays hold no open file handles."""

    def _finalize(self) -> None:
        """Every block is already on disk; nothing to flush."""

    def _install(self) -> None:
        if self.path.exists() and not self.overwrite:
            raise OutputExistsError(
                f"output {self.path} already exists: pass --overwrite to replace it"
            )
        install(self._tmp, self.path, is_ours=is_geoseg_output)
        remove_ours(self._tmp_dir)


def open_writer(
    path: str | os.PathLike[str],
    spec: OutputSpec,
    overwrite: bool = False,
    partial_dir: Path | None = None,
    resume: bool = False,
) -> ClassMapWriter:
    """Open the writer for ``path``'s format (use it as a context manager).

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` (GeoTIFF, COG with ``spec.cog``) or ``.zarr``.
    spec : OutputSpec
        Geometry and legend.
    overwrite : bool
        Replace an existing output at commit.
    partial_dir : Path, optional
        GeoTIFF only: keep temporary files here (resumable, see :class:`GeoTiffWriter`).
    resume : bool
        Reopen the partial files in ``partial_dir`` instead of creating them.

    Returns
    -------
    ClassMapWriter
        Commits on a clean exit of the ``with`` block, aborts on an exception.
    """
    fmt = check_output(path, overwrite, probabilities=spec.probabilities)
    if fmt == "zarr":
        if spec.cog:
            log.warning("--cog applies to GeoTIFF outputs only; ignored for %s", path)
        if resume:
            raise OutputError(f"--resume supports GeoTIFF outputs only, not {path}")
        return ZarrWriter(path, spec, overwrite)
    return GeoTiffWriter(path, spec, overwrite, partial_dir, resume)
