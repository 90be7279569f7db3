"""Whole-image reads for labelled data: the pixels train, finetune and evaluate see.

Image pixels are always decoded by GDAL, the decoder ``predict`` and ``adapt`` read rasters
with: JPEG decoders differ (GDAL's libjpeg and PIL's gave 17.6% different values on a Dubai
image, which flipped 0.6% of the predicted labels), so one decoder keeps training, scoring
and serving on the same pixels. Masks are lossless (PNG, GeoTIFF); PIL only expands palette
PNGs to colours for colour-coded masks, where the colours themselves are the labels.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from geoseg.errors import DatasetError, LabelError, RasterReadError

# The file types a labelled folder's images and masks may have.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")

# Whole-image reads are bounded: a (tiny, hostile or mistyped) file declaring more than 2**28
# pixels per band (16384 x 16384) would need gigabytes per band in memory; tile such scenes
# (gdal_retile.py) or train from windows of them instead.
MAX_PIXELS = 2**28


def check_size(path: Path, width: int, height: int, what: str) -> None:
    """Refuse an image declaring more than :data:`MAX_PIXELS` pixels per band."""
    if width * height > MAX_PIXELS:
        raise RasterReadError(
            f"{what} {path} declares {width}x{height} pixels, more than {MAX_PIXELS} per band "
            "(reading it whole would need gigabytes); cut it into smaller tiles "
            "(gdal_retile.py) or check the file"
        )


def read_raster(path: Path, what: str = "raster", label: bool = False, raw: bool = False):
    """Read a whole raster with GDAL: ``(data (bands, H, W), valid or None, profile)``.

    With ``label`` it must be one band of integers. ``valid`` is the dataset mask when the
    raster declares nodata. Unless ``raw`` (masks: every band as stored), alpha bands are
    left out of the data (they are a mask, not a band a model was trained on) and palette
    images are expanded to their colours.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    from geoseg.io.raster import check_input_file

    check_input_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                check_size(path, src.width, src.height, what)
                if label:
                    _check_label_raster(src, path, what)
                    return src.read(), None, src.profile
                data = src.read() if raw else _image_bands(src)
                valid = src.dataset_mask() > 0 if src.nodata is not None else None
                return data, valid, src.profile
    except RasterioIOError as exc:
        raise RasterReadError(f"cannot read {what} {path} ({exc}); check the path") from None


def _check_label_raster(src, path: Path, what: str) -> None:
    from geoseg.core.labels import check_integer_dtype

    if src.count != 1:
        raise LabelError(
            f"{what} {path} has {src.count} bands; labels must be a single-band class-id "
            f"raster: extract one with gdal_translate -b N {path} labels.tif"
        )
    check_integer_dtype(src.dtypes[0], f"{what} {path}")


def _image_bands(src) -> np.ndarray:
    """The image's bands without alpha; a palette image as its RGB colours."""
    from rasterio.enums import ColorInterp

    interp = src.colorinterp
    if src.count == 1 and interp[0] == ColorInterp.palette:
        lut = np.zeros((256, 3), np.uint8)
        for i, rgba in src.colormap(1).items():
            if 0 <= i < 256:
                lut[i] = rgba[:3]
        return np.moveaxis(lut[src.read(1).astype(np.intp)], -1, 0)
    bands = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha] or [1]
    return src.read(bands)


def read_image(path: Path, what: str = "image") -> np.ndarray:
    """An image (JPEG, PNG, GeoTIFF...) as ``(bands, H, W)`` in its own dtype, decoded by GDAL."""
    return read_raster(Path(path), what)[0]


def open_pil(path: Path, what: str = "image"):
    """Open a mask with PIL after refusing FIFOs, devices and decompression bombs.

    Returns an open ``PIL.Image`` (use it as a context manager).

    Raises
    ------
    RasterReadError
        Missing, not a regular file, unreadable, or declaring too many pixels.
    """
    from PIL import Image, UnidentifiedImageError

    from geoseg.io.raster import check_input_file

    check_input_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else "too many pixels"
        raise RasterReadError(
            f"{what} {path} declares {size}, more than PIL decodes safely "
            f"({Image.MAX_IMAGE_PIXELS * 2} pixels); it is corrupt or a decompression bomb: "
            "check the file"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise RasterReadError(f"cannot read {what} {path} ({exc}); check the file") from None
    try:
        check_size(path, im.width, im.height, what)
    except RasterReadError:
        im.close()
        raise
    return im


def _read_mask_bands(path: Path, what: str, rgb: bool) -> np.ndarray:
    """A mask's bands ``(bands, H, W)`` as stored.

    GeoTIFF masks are read by GDAL, PNG masks by PIL, which expands a palette to colours when
    ``rgb`` (a colour-coded mask) and keeps its indices as ids otherwise.
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        return read_raster(path, what, raw=True)[0]
    try:
        with open_pil(path, what) as im:
            expand = im.mode in ("RGBA", "CMYK") or (rgb and im.mode == "P")
            arr = np.asarray(im.convert("RGB") if expand else im)
    except RasterReadError:
        raise
    except (OSError, ValueError) as exc:
        raise RasterReadError(f"cannot read {what} {path} ({exc}); check the file") from None
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def read_colour_mask(path: Path, what: str = "mask") -> np.ndarray:
    """A colour-coded mask as ``(H, W, 3)`` uint8 colours (a palette PNG expanded)."""
    path = Path(path)
    data = _read_mask_bands(path, what, rgb=True)
    if data.shape[0] < 3:
        raise DatasetError(f"{what} {path} is not an RGB image; set label_mode: ids")
    if data.dtype != np.uint8:
        raise DatasetError(
            f"{what} {path} is {data.dtype.name}; RGB colour masks are 8-bit per channel: "
            "convert it with gdal_translate -ot Byte"
        )
    return np.moveaxis(data[:3], 0, -1)


def read_id_mask(path: Path, what: str = "label") -> np.ndarray:
    """A class-id mask as ``(H, W)`` int64; several bands or a float dtype are refused."""
    from geoseg.core.labels import check_integer_dtype

    path = Path(path)
    data = _read_mask_bands(path, what, rgb=False)
    if data.shape[0] != 1:
        raise LabelError(
            f"{what} {path} has {data.shape[0]} bands; expected a single-band id image (set "
            "label_mode: rgb for colour masks, or extract the band with gdal_translate -b 1)"
        )
    check_integer_dtype(data.dtype, f"{what} {path}")
    return data[0].astype(np.int64)


def read_label_png(path: Path) -> np.ndarray:
    """A single-band label image as ``(H, W)`` int64 (palette PNGs keep their indices)."""
    from geoseg.core.labels import check_integer_dtype

    path = Path(path)
    try:
        with open_pil(path, "label") as im:
            arr = np.asarray(im)
    except RasterReadError:
        raise
    except (OSError, ValueError) as exc:
        raise RasterReadError(f"cannot read label {path} ({exc}); check the file") from None
    if arr.ndim != 2:
        raise DatasetError(
            f"label {path} has {arr.shape[-1]} channels; expected a single-band id image"
        )
    check_integer_dtype(arr.dtype, f"label {path}")
    return arr.astype(np.int64)
