"""``geoseg evaluate``: streaming mIoU, per-class IoU and confusion matrix."""

from __future__ import annotations

import contextlib
import functools
import os
from types import SimpleNamespace

import click

from geoseg.commands.options import (
    Command,
    blend_opt,
    device_opt,
    overwrite_opt,
    progress_opt,
    quiet_opt,
    report_opt,
    tta_opt,
    verbose_opt,
)


@click.command(cls=Command)
@click.argument("pred", required=False, type=click.Path())
@click.argument("label", required=False, type=click.Path())
@click.option("--dataset", default=None, help="KIND:PATH (ade20k, cityscapes, folder, rasters).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(),
    default=None,
    help="Dataset config (classes, palette, ignore) for folder:, rasters: and raster pairs.",
)
@click.option("--split", default=None, help="Dataset split (ADE20K validation, Cityscapes val).")
@click.option("--model", type=click.Path(), default=None, help="Run this checkpoint on --dataset.")
@click.option(
    "--pred-dir",
    type=click.Path(),
    default=None,
    help="Folder of predictions for --dataset, named after the images.",
)
@click.option(
    "--pred-ids",
    type=click.Choice(["trainIds", "labelIds"]),
    default="trainIds",
    show_default=True,
    help="Cityscapes predictions as trainIds or labelIds.",
)
@click.option(
    "--include", multiple=True, help="Only samples whose names match this glob (repeatable)."
)
@click.option("--exclude", multiple=True, help="Leave out samples matching this glob.")
@tta_opt
@click.option("--num-classes", type=int, default=None, help="Classes of a raster pair.")
@click.option(
    "--ignore-index",
    type=int,
    default=None,
    help="Label id left out of the scores [default: the config's ignore_index, or 255].",
)
@click.option("--align", is_flag=True, help="Resample the label onto the prediction grid.")
@click.option("--block-size", type=int, default=2048, show_default=True)
@click.option("--workers", type=int, default=None, help="Local cluster of N processes.")
@click.option("--tile", type=int, default=None, help="Window side for --model.")
@click.option("--overlap", type=int, default=None, help="Window overlap for --model.")
@blend_opt
@click.option("--batch-size", type=int, default=None, help="Windows per model call [auto].")
@device_opt
@report_opt("--json", "all metrics as JSON")
@report_opt("--csv", "the per-class table as CSV")
@click.option("--plot", type=click.Path(), default=None, help="Confusion matrix + IoU PNG.")
@click.option("--error-map", type=click.Path(), default=None, help="Correct/wrong/ignored map.")
@overwrite_opt
@progress_opt
@quiet_opt
@verbose_opt
def evaluate(**options):
    """Score PRED against LABEL (rasters), or a model / prediction folder on --dataset."""
    from geoseg.commands.progress import ProgressBar
    from geoseg.core.metrics import summarize
    from geoseg.io.raster import raster_files
    from geoseg.report.evaluate import check_outputs, report
    from geoseg.report.outputs import check_stdout, file_outputs

    o = SimpleNamespace(**options)
    _check_numbers(**{k: options[k] for k in _LOWER_BOUNDS})
    reports = {"--json": o.json_out, "--csv": o.csv_out}
    check_stdout(reports)
    outputs = {**file_outputs(reports), "--plot": o.plot, "--error-map": o.error_map}
    root = o.dataset.partition(":")[2] if o.dataset else None
    inputs = [*raster_files(o.pred), *raster_files(o.label), o.config_file, o.model, o.pred_dir]
    inputs.append(root)
    check_outputs(outputs, o.overwrite, inputs)
    bar = ProgressBar("evaluate", unit="items", enabled=o.progress and not o.quiet)
    if o.dataset:
        if o.pred or o.label:
            raise click.UsageError("give either PRED LABEL or --dataset, not both")
        if o.error_map:
            raise click.UsageError("--error-map maps a PRED LABEL pair; drop it with --dataset")
        check = functools.partial(check_outputs, outputs, o.overwrite)
        cm, names, notes, read = _dataset(o, bar, lambda files: check(inputs + files))
        inputs += read
    else:
        if not (o.pred and o.label):
            raise click.UsageError("give PRED and LABEL rasters, or --dataset KIND:PATH")
        cm, names, notes = _pair(o, bar)
    report(
        summarize(cm, names),
        notes,
        json_out=o.json_out,
        csv_out=o.csv_out,
        plot=o.plot,
        overwrite=o.overwrite,
        inputs=inputs,
    )


# option -> (smallest value, example); checked before any file is opened
_LOWER_BOUNDS = {
    "num_classes": (1, 6),
    "block_size": (1, 2048),
    "workers": (1, 4),
    "tile": (1, 512),
    "batch_size": (1, 4),
    "overlap": (0, 128),
}


def _check_numbers(**values: int | None) -> None:
    """Refuse zero or negative counts and sizes, and an unbounded --num-classes, up front."""
    from geoseg.core.metrics import check_num_classes
    from geoseg.errors import ConfigError

    for name, value in values.items():
        if value is None:
            continue
        lowest, example = _LOWER_BOUNDS[name]
        hint = "--" + name.replace("_", "-")
        if value < lowest:
            raise click.BadParameter(
                f"{value} is below {lowest}; e.g. {hint} {example}", param_hint=hint
            )
        if name == "num_classes":
            try:
                check_num_classes(value)
            except ConfigError as exc:
                raise click.BadParameter(str(exc), param_hint=hint) from None
    tile, overlap = values.get("tile"), values.get("overlap")
    if tile is not None and overlap is not None and overlap >= tile:
        raise click.BadParameter(
            f"{overlap} must be smaller than --tile {tile}; e.g. --overlap {tile // 4}",
            param_hint="--overlap",
        )


def _pair(o: SimpleNamespace, bar):
    import dataclasses

    from geoseg.data import dataset_config
    from geoseg.errors import ConfigError
    from geoseg.run.scoring import PairSpec, evaluate_pair, pair_classes
    from geoseg.train.config import TRAIN_KEYS

    labels = dataset_config(o.config_file, other_keys=TRAIN_KEYS)
    try:
        num_classes, names = pair_classes(o.pred, o.num_classes, labels)
    except ConfigError as exc:
        if exc.option is not None or labels is not None:
            raise
        raise click.BadParameter(str(exc), param_hint="--num-classes") from None
    ignore = o.ignore_index
    if ignore is None:
        ignore = labels.ignore_index if labels is not None else 255
    if labels is not None:  # ignored colours/ids become the index the matrix leaves out
        labels = dataclasses.replace(labels, ignore_index=ignore)
    spec = PairSpec(o.pred, o.label, num_classes, ignore, o.align, labels)
    cm, notes = evaluate_pair(
        spec,
        block_size=o.block_size,
        workers=o.workers,
        error_map=o.error_map,
        overwrite=o.overwrite,
        progress=bar,
    )
    return cm, names, notes


def _dataset(o: SimpleNamespace, bar, check):
    from pathlib import Path

    from geoseg.data import dataset_config, open_dataset
    from geoseg.run.scoring import evaluate_dataset
    from geoseg.train.config import TRAIN_KEYS

    spec, model, pred_dir = o.dataset, o.model, o.pred_dir
    # a training config describes its dataset too: its training options are not errors here
    config = dataset_config(o.config_file, other_keys=TRAIN_KEYS)
    ds = open_dataset(spec, config, o.split, o.include, o.exclude)
    if not len(ds):
        from geoseg.errors import DatasetError

        raise DatasetError(
            f"no sample of {spec} matches --include {list(o.include)} --exclude "
            f"{list(o.exclude)}; check the patterns against the sample names"
        )
    read = [os.fspath(f) for pair in ds.pairs for f in (pair.image, pair.mask)]
    check(read)
    if pred_dir and not model and not Path(pred_dir).is_dir():
        from geoseg.errors import InputError

        raise InputError(f"--pred-dir {pred_dir} is not a folder; give the folder of predictions")
    notes = [f"{len(ds)} samples from {spec}; ignore index {ds.config.ignore_index}"]
    miss = None
    with contextlib.ExitStack() as stack:
        if model:
            predict, note = _model_predictor(model, len(ds.config), o, stack)
        elif pred_dir:
            predict, note, miss = _folder_predictor(pred_dir, spec, o.pred_ids)
        else:
            raise click.UsageError("--dataset needs --model CKPT or --pred-dir DIR")
        notes.append(note)
        cm = evaluate_dataset(ds, predict, miss_value=miss, progress=bar)
    if pred_dir:
        _check_encoding(cm, spec, pred_dir)
    return cm, list(ds.config.names), notes, read


def _model_predictor(model, k, o: SimpleNamespace, stack: contextlib.ExitStack):
    """``predict(sample)`` through predict's own path (plan, Dask batches, stitching), a note."""
    from geoseg.config import PredictConfig, build_config
    from geoseg.errors import InputError
    from geoseg.run.arrays import ImagePredictor

    flags = {"tile": o.tile, "overlap": o.overlap, "blend": o.blend, "tta": o.tta}
    cfg = build_config(PredictConfig, {**flags, "batch_size": o.batch_size, "device": o.device})
    predictor = stack.enter_context(ImagePredictor(model, cfg))
    if predictor.meta.classes != k:
        raise InputError(
            f"the model predicts {predictor.meta.classes} classes but {o.dataset} has {k}; "
            "evaluate a model trained on this class set"
        )

    def predict(sample):
        return predictor(sample.image, sample.valid)

    tile = o.tile or predictor.meta.tile_size
    note = f"model {model}, tile {tile}, blend {cfg.blend}, tta {cfg.tta}"
    return predict, note


def _folder_predictor(pred_dir, spec, pred_ids):
    """``predict(sample)`` reading each image's prediction from ``pred_dir``, a note, the miss id.

    Cityscapes predictions in labelIds are mapped to trainIds; ids without a trainId count as
    misses (the last column of the confusion matrix).
    """
    from pathlib import Path

    from geoseg.io.images import read_label_png
    from geoseg.run.scoring import find_prediction

    miss = None
    cityscapes_label_ids = spec.startswith("cityscapes:") and pred_ids == "labelIds"
    if cityscapes_label_ids:
        from geoseg.data.cityscapes import MISS, label_ids_to_train_ids

        miss = MISS

    def predict(sample):
        ids = read_label_png(find_prediction(Path(pred_dir), sample.name))
        if cityscapes_label_ids:
            return label_ids_to_train_ids(ids, prediction=True)
        return ids

    note = f"predictions from {pred_dir}" + (" (labelIds)" if miss is not None else "")
    return predict, note, miss


def _check_encoding(cm, spec: str, pred_dir: str) -> None:
    """Refuse predictions that are one class off everywhere (an encoding mistake, not a score)."""
    from geoseg.core.metrics import shifted_share
    from geoseg.errors import LabelError

    share = shifted_share(cm)
    if share > 0.5:
        hint = (
            "ADE20K predictions use 0..149 (the annotation ids minus one)"
            if spec.startswith("ade20k:")
            else "predictions use the dataset's class ids 0..K-1"
        )
        raise LabelError(
            f"{share:.0%} of the pixels in {pred_dir} predict their true class + 1: the "
            f"predictions look shifted by one; {hint}: subtract 1 from them"
        )
