"""Streaming evaluation: confusion matrices over raster pairs and labelled datasets.

Raster pairs are compared block by block on Dask; datasets are scored with a model through the
tiled predict engine, or against a folder of predictions.

Integer confusion matrices add up exactly, so the result is the same for any block size and
any number of workers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.core.metrics import confusion_matrix
from geoseg.errors import AlignmentError, InputError, RasterReadError
from tilers.grid import Window, blocks

if TYPE_CHECKING:
    from geoseg.data.config import DatasetConfig

log = logging.getLogger("geoseg.run.scoring")

# error-map values
CORRECT, WRONG, IGNORED = 0, 1, 2


@dataclass(frozen=True)
class PairSpec:
    """A prediction raster and a label raster to compare (picklable task argument).

    ``labels`` says how the label raster encodes its classes (a dataset config: RGB colours
    through its palette, or ids with ``ignore_ids``); None reads band 1 as class ids.
    """

    pred: str
    label: str
    num_classes: int
    ignore_index: int | None = 255
    align: bool = False
    labels: DatasetConfig | None = None

    @property
    def colour_labels(self) -> bool:
        """Whether the label raster holds RGB colours (decoded through the palette)."""
        return self.labels is not None and self.labels.label_mode == "rgb"


def _open(path: str):
    from geoseg.io.raster import open_dataset

    return open_dataset(path)


def check_class_raster(src, path: str, role: str) -> None:
    """Refuse a prediction or label raster that cannot be scored as it is.

    A float raster would be truncated (2.9 scored as class 2), a complex one cast with a
    warning, and of a multi-band raster only band 1 would be scored: all are refused.
    """
    from geoseg.core.labels import check_integer_dtype

    if src.count != 1:
        raise InputError(
            f"{role} {path} has {src.count} bands; evaluate scores single-band class maps: "
            f"extract one with gdal_translate -b N {path} {role}_band.tif"
        )
    check_integer_dtype(src.dtypes[0], f"{role} {path}")


def check_colour_raster(src, path: str) -> None:
    """Refuse a colour-coded label raster that is not 8-bit RGB(A)."""
    if src.count < 3 or src.dtypes[0] != "uint8":
        raise InputError(
            f"label {path} has {src.count} {src.dtypes[0]} band(s); label_mode rgb needs 8-bit "
            "RGB colours: set label_mode: ids in the config for a class-id raster"
        )


def grid_differences(pred, label) -> list[str]:
    """What differs between two open rasters' grids (CRS, transform, shape)."""
    diffs = []
    if (pred.height, pred.width) != (label.height, label.width):
        diffs.append(f"shape {pred.width}x{pred.height} vs {label.width}x{label.height}")
    if pred.crs != label.crs:
        diffs.append(f"CRS {pred.crs} vs {label.crs}")
    if not pred.transform.almost_equals(label.transform):
        diffs.append(f"transform {tuple(pred.transform)[:6]} vs {tuple(label.transform)[:6]}")
    return diffs


def check_pair(spec: PairSpec) -> list[str]:
    """Refuse mismatched grids unless ``align``; return notes about what was done."""
    with _open(spec.pred) as p, _open(spec.label) as lab:
        check_class_raster(p, spec.pred, "prediction")
        if spec.colour_labels:
            check_colour_raster(lab, spec.label)
        else:
            check_class_raster(lab, spec.label, "label")
        diffs = grid_differences(p, lab)
        if diffs and not spec.align:
            raise AlignmentError(
                f"{spec.pred} and {spec.label} are not on the same grid ({'; '.join(diffs)}); "
                "pass --align to resample the label onto the prediction grid (nearest)"
            )
        if diffs and (p.crs is None or lab.crs is None):
            raise AlignmentError(
                f"cannot align {spec.label} to {spec.pred}: both need a CRS ({'; '.join(diffs)})"
            )
        if diffs:
            return [f"label resampled onto the prediction grid (nearest): {'; '.join(diffs)}"]
    return []


def _read_label(spec: PairSpec, window: Any) -> tuple[np.ndarray, np.ndarray]:
    """The label's block on the prediction grid (resampled, nearest, with ``align``)."""
    from geoseg.io.raster import shared_dataset, shared_warped

    lab = shared_warped(spec.label, spec.pred) if spec.align else shared_dataset(spec.label)
    valid = lab.read_masks(1, window=window) > 0
    if spec.colour_labels:
        rgb = np.moveaxis(lab.read((1, 2, 3), window=window), 0, -1)
        where = f"label {spec.label} (block at row {window.row_off}, column {window.col_off})"
        return spec.labels.colours_to_ids(rgb, where), valid
    ids = lab.read(1, window=window)
    return (ids if spec.labels is None else spec.labels.mark_ignored(ids)), valid


def pair_block(spec: PairSpec, window: Window, with_errors: bool = False):
    """Dask task: confusion matrix (and optionally the error map) of one block."""
    from rasterio.errors import RasterioError
    from rasterio.windows import Window as RWindow

    from geoseg.io.raster import shared_dataset

    failed, current = None, spec.pred
    try:
        pred = shared_dataset(spec.pred)
        w = RWindow(window.col, window.row, window.width, window.height)
        p = pred.read(1, window=w)
        valid = pred.read_masks(1, window=w) > 0
        current = spec.label
        t, lvalid = _read_label(spec, w)
    except RasterioError as exc:
        failed = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if failed is not None:  # raised outside the handler: no unpicklable GDAL error chained
        raise RasterReadError(
            f"cannot read the block at row {window.row}, column {window.col} of {current} "
            f"({failed}); the file may be truncated or corrupt: re-create it"
        )
    valid &= lvalid
    if spec.ignore_index is not None:
        keep = valid & (t != spec.ignore_index)
    else:
        keep = valid
    try:
        cm = confusion_matrix(p, t, spec.num_classes, spec.ignore_index, valid=valid)
    except InputError as exc:
        raise type(exc)(f"{spec.label} / {spec.pred}: {exc}") from None
    if not with_errors:
        return cm, None
    err = np.where(keep, np.where(p == t, CORRECT, WRONG), IGNORED).astype(np.uint8)
    return cm, err


def evaluate_pair(
    spec: PairSpec,
    *,
    block_size: int = 2048,
    workers: int | None = None,
    client: Any = None,
    error_map: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Confusion matrix of a prediction raster against a label raster, block-parallel.

    Only ``in_flight`` blocks exist in memory at any time, so memory does not grow with the
    raster. With ``error_map`` a georeferenced GeoTIFF marks correct (0), wrong (1) and ignored
    (2) pixels.
    """
    from geoseg.run.scheduling import dask_client, submit_ordered, total_threads

    notes = check_pair(spec)
    with _open(spec.pred) as pred:
        height, width = pred.height, pred.width
        crs = pred.crs.to_wkt() if pred.crs else None
        transform = tuple(pred.transform)[:6]
    bl = blocks(height, width, block_size)
    cm = np.zeros((spec.num_classes, spec.num_classes), np.int64)
    writer_ctx = _error_writer(spec, error_map, height, width, crs, transform, overwrite)
    with dask_client(workers, client=client, threads=2) as c, writer_ctx as writer:
        in_flight = 2 * total_threads(c)
        task = functools.partial(pair_block, spec, with_errors=writer is not None)

        for i, (win, (bcm, err)) in enumerate(
            zip(bl, submit_ordered(c, task, ((b,) for b in bl), in_flight), strict=True)
        ):
            cm += bcm
            if writer is not None:
                writer.write(win.row, win.col, err)
            if progress is not None:
                progress(i + 1, len(bl))
    return cm, notes


def check_error_map(path: str, overwrite: bool, inputs) -> None:
    """Refuse an ``--error-map`` path before any work.

    An input, a link, an existing file (without ``overwrite``), a missing folder or an unknown
    extension is refused.
    """
    from geoseg.io.writers import check_output

    check_output(path, overwrite, inputs, what="--error-map")


def _error_writer(spec, path, height, width, crs, transform, overwrite):
    if not path:
        return contextlib.nullcontext()
    from geoseg.io.writers import OutputSpec, open_writer

    check_error_map(path, overwrite, (spec.pred, spec.label))
    out = OutputSpec(
        height=height,
        width=width,
        crs_wkt=crs,
        transform=transform,
        georeferenced=crs is not None,
        class_names=["correct", "wrong", "ignored"],
        colours=[(26, 150, 65), (215, 25, 28), (200, 200, 200)],
    )
    return open_writer(path, out, overwrite=overwrite)


def class_names_from_raster(path: str) -> list[str] | None:
    """Class names stored by geoseg in a class-map GeoTIFF (``CLASS_NAMES`` tag), if any."""
    from geoseg.core.labels import class_names_from_tags

    with _open(path) as src:
        return class_names_from_tags({**src.tags(), **src.tags(1)})


def pair_classes(
    pred: str, num_classes: int | None, labels: DatasetConfig | None = None
) -> tuple[int, list[str]]:
    """The class count and names to score ``pred`` with.

    The dataset config's classes when one is given, else the given count, else the class
    names ``pred`` carries.
    """
    from geoseg.core.metrics import check_num_classes
    from geoseg.errors import ConfigError

    names = class_names_from_raster(pred)
    if labels is not None and labels.classes:
        return config_classes(pred, names, num_classes, labels)
    if num_classes is None:
        if names is None:
            raise ConfigError(
                f"{pred} carries no class names; give the class count, e.g. --num-classes 6"
            )
        num_classes = len(names)
    if names is None or len(names) != num_classes:
        check_num_classes(num_classes, f"the class count of {pred}")
        names = [f"class_{i}" for i in range(num_classes)]
    return num_classes, names


def config_classes(
    pred: str, names: list[str] | None, num_classes: int | None, labels: DatasetConfig
) -> tuple[int, list[str]]:
    """The config's classes, refused where ``pred``'s own names or ``num_classes`` disagree."""
    from geoseg.errors import ConfigError

    wanted = list(labels.names)
    if num_classes is not None and num_classes != len(wanted):
        raise ConfigError(
            f"num_classes {num_classes} disagrees with the config's {len(wanted)} classes; "
            "drop it (the config names the classes)",
            option="num_classes",
        )
    if names is not None and names != wanted:
        raise ConfigError(
            f"{pred} holds classes {names[:8]} but the config names {wanted[:8]}; score it "
            "with the config of the model that wrote it"
        )
    return len(wanted), wanted


# How a prediction file is named after its image: as the image, or as `geoseg predict
# --output-dir` names it by default (--name '{stem}_classes.tif').
PREDICTION_NAMES = ("{stem}.png", "{stem}.tif", "{stem}.tiff", "{stem}_classes.tif")


def find_prediction(pred_dir: Path, name: str) -> Path:
    """The prediction file of sample ``name`` in ``pred_dir`` (:data:`PREDICTION_NAMES`).

    GDAL's ``.aux.xml`` sidecars beside predictions are never taken for one.
    """
    base = name.split("/")[-1]
    for stem in (name, base):
        for pattern in PREDICTION_NAMES:
            p = pred_dir / pattern.format(stem=stem)
            if p.is_file():
                return p
    hits = sorted(p for p in pred_dir.rglob(f"{base}*") if not p.name.endswith(".aux.xml"))
    if len(hits) == 1:
        return hits[0]
    from geoseg.errors import DatasetError

    raise DatasetError(
        f"no prediction for {name} in {pred_dir} (looked for {base}.png/.tif or "
        f"{base}_classes.tif); name prediction files after their images"
    )


def evaluate_dataset(
    dataset,
    predict: Callable[[dict], np.ndarray],
    *,
    pred_nodata: int | None = 255,
    miss_value: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Sum the confusion matrices of ``predict(sample)`` against each sample's mask."""
    k = len(dataset.config)
    cm = None
    for i, sample in enumerate(dataset):
        pred = predict(sample)
        if pred.shape != sample.mask.shape:
            raise AlignmentError(
                f"{sample.name}: prediction {pred.shape} and label {sample.mask.shape} "
                "differ in size"
            )
        part = confusion_matrix(
            pred,
            sample.mask,
            k,
            dataset.config.ignore_index,
            pred_nodata=pred_nodata,
            miss_value=miss_value,
        )
        cm = part if cm is None else cm + part
        if progress is not None:
            progress(i + 1, len(dataset))
    if cm is None:
        from geoseg.errors import DatasetError

        raise DatasetError("the dataset is empty")
    return cm
