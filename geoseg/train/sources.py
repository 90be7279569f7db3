"""Labelled samples for training: image/mask folders, raster pairs and vector labels.

Every source yields :class:`Sample` objects holding the raw image ``(bands, H, W)`` and an
``int64`` class-id mask ``(H, W)`` in which nodata and unlabelled pixels are ``ignore_index``,
so they never enter the loss. Label problems (unknown colours, ids outside the class set,
misaligned grids, a missing class attribute) raise one-line errors naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from geoseg.core.labels import check_ids
from geoseg.data.base import Sample
from geoseg.errors import (
    AlignmentError,
    ConfigError,
    DatasetError,
    InputError,
    LabelError,
)
from geoseg.io.images import read_raster
from geoseg.train.config import SourceSpec, TrainConfig


def load_dataset(spec: SourceSpec, cfg: TrainConfig) -> list[Sample]:
    """Samples of a ``folder``, ``ade20k`` or ``cityscapes`` source, read as evaluate reads them.

    The same reader (:func:`geoseg.data.open_dataset`), sample names and include/exclude
    filters as ``geoseg evaluate --dataset``; labels must fit the run's classes.
    """
    from geoseg.data import open_dataset

    ds = open_dataset(f"{spec.kind}:{spec.path}", cfg.dataset, None, spec.include, spec.exclude)
    k, ignore = len(cfg.dataset), cfg.dataset.ignore_index
    return [dataclasses.replace(s, mask=check_ids(s.mask, k, ignore, s.name)) for s in ds]


def _same_grid(a: dict, b: dict) -> bool:
    return (
        a["crs"] == b["crs"]
        and a["width"] == b["width"]
        and a["height"] == b["height"]
        and np.allclose(tuple(a["transform"]), tuple(b["transform"]), atol=1e-9)
    )


def _align_labels(labels: np.ndarray, lprof: dict, iprof: dict, nodata: int) -> np.ndarray:
    from rasterio.warp import Resampling, reproject

    out = np.full((iprof["height"], iprof["width"]), nodata, labels.dtype)
    reproject(
        labels,
        out,
        src_transform=lprof["transform"],
        src_crs=lprof["crs"],
        src_nodata=lprof.get("nodata"),
        dst_transform=iprof["transform"],
        dst_crs=iprof["crs"],
        dst_nodata=nodata,
        resampling=Resampling.nearest,
    )
    return out


def load_raster_pair(spec: SourceSpec, cfg: TrainConfig) -> list[Sample]:
    """A georeferenced image raster and its label raster (same grid, or ``align``)."""
    if not spec.labels:
        raise _no_labels("raster", spec.path)
    image, valid, iprof = read_raster(Path(spec.path), "image raster")
    labels, _, lprof = read_raster(Path(spec.labels), "label raster", label=True)
    labels = labels[0].astype(np.int64)
    nodata = lprof.get("nodata")
    # an integer raster's pixels can only equal an integral nodata value (NaN never matches)
    if nodata is not None and math.isfinite(nodata) and float(nodata).is_integer():
        labels[labels == int(nodata)] = cfg.dataset.ignore_index
    if not _same_grid(iprof, lprof):
        if not cfg.align:
            raise AlignmentError(
                f"label raster {spec.labels} ({lprof['width']}x{lprof['height']}, "
                f"{lprof['crs']}) is not on the grid of {spec.path} ({iprof['width']}x"
                f"{iprof['height']}, {iprof['crs']}); pass --align to resample the labels"
            )
        lprof = dict(lprof, nodata=cfg.dataset.ignore_index)
        labels = _align_labels(labels, lprof, iprof, cfg.dataset.ignore_index)
    mask = check_ids(labels, len(cfg.dataset), cfg.dataset.ignore_index, spec.labels)
    if valid is not None:
        mask[~valid] = cfg.dataset.ignore_index
    return [Sample(Path(spec.path).stem, image, mask, valid)]


def _no_labels(kind: str, path: str) -> ConfigError:
    return ConfigError(f"{kind} source {path} has no labels; add labels: PATH to the source")


def _class_value(value, names: list[str], attr: str, where: str) -> int:
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int | float) and int(value) == value and 0 <= value < len(names):
        return int(value)
    raise LabelError(
        f"{where}: {attr}={value!r} is not a class name or id 0..{len(names) - 1}; "
        "fix the attribute or the classes in the config"
    )


def vector_shapes(path: Path, attr: str, names: list[str], dst_crs) -> list[tuple[dict, int]]:
    """Read GeoJSON polygons as ``(geometry, class id)`` pairs in ``dst_crs``."""
    from rasterio.warp import transform_geom

    if path.suffix.lower() not in (".geojson", ".json"):
        raise InputError(
            f"vector labels {path} are not GeoJSON; convert them (ogr2ogr -f GeoJSON out.geojson "
            f"{path.name})"
        )
    from geoseg.io.raster import check_input_file

    check_input_file(path, "vector labels")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise InputError(f"cannot read vector labels {path} ({msg}); check the file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("features", []), list):
        raise InputError(
            f"vector labels {path} are not a GeoJSON FeatureCollection; check the file"
        )
    src_crs = (doc.get("crs") or {}).get("properties", {}).get("name", "EPSG:4326")
    shapes = []
    for i, feat in enumerate(doc.get("features", [])):
        props = feat.get("properties") if isinstance(feat, dict) else None
        if not isinstance(feat, dict) or not isinstance(props or {}, dict):
            raise InputError(f"{path}: feature {i} is not a GeoJSON feature; check the file")
        props = props or {}
        if attr not in props:
            raise LabelError(
                f"{path}: feature {i} has no attribute {attr!r} (has {sorted(props)}); "
                "pass --class-attr NAME"
            )
        geom = feat["geometry"]
        if dst_crs is not None and str(dst_crs) != str(src_crs):
            geom = transform_geom(src_crs, dst_crs, geom)
        shapes.append((geom, _class_value(props[attr], names, attr, str(path))))
    return shapes


def load_vector(spec: SourceSpec, cfg: TrainConfig) -> list[Sample]:
    """An image raster with polygon labels rasterized onto its grid (uncovered = ignore)."""
    from rasterio.features import rasterize

    if not spec.labels:
        raise _no_labels("vector", spec.path)
    image, valid, prof = read_raster(Path(spec.path), "image raster")
    shapes = vector_shapes(Path(spec.labels), spec.class_attr, list(cfg.dataset.names), prof["crs"])
    mask = np.full((prof["height"], prof["width"]), cfg.dataset.ignore_index, np.int64)
    if shapes:
        mask = rasterize(
            shapes,
            out_shape=mask.shape,
            transform=prof["transform"],
            fill=cfg.dataset.ignore_index,
            dtype="int64",
        )
    if valid is not None:
        mask[~valid] = cfg.dataset.ignore_index
    return [Sample(Path(spec.path).stem, image, mask, valid)]


LOADERS = {
    "folder": load_dataset,
    "raster": load_raster_pair,
    "vector": load_vector,
    "ade20k": load_dataset,
    "cityscapes": load_dataset,
}


def load_samples(specs, cfg: TrainConfig, what: str = "training") -> list[Sample]:
    """Load every sample of ``specs``; an empty result is a :class:`DatasetError`."""
    samples: list[Sample] = []
    for spec in specs:
        samples.extend(LOADERS[spec.kind](spec, cfg))
    if not samples:
        paths = ", ".join(s.path for s in specs) or "none given"
        raise DatasetError(
            f"the {what} set is empty (sources: {paths}); check the paths and include/exclude "
            "patterns"
        )
    bands = {s.image.shape[0] for s in samples}
    if len(bands) > 1:
        raise DatasetError(f"{what} images have different band counts {sorted(bands)}")
    for s in samples:
        if s.image.shape[1:] != s.mask.shape:
            raise AlignmentError(
                f"{s.name}: image {s.image.shape[1:]} and mask {s.mask.shape} differ in size; "
                "fix the pair"
            )
    return samples
