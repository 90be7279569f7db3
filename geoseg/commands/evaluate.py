"""``geoseg evaluate``: streaming mIoU, per-class IoU and confusion matrix."""

from __future__ import annotations

import os

import click

from geoseg.commands.options import device_opt, overwrite_opt, progress_opt, quiet_opt, verbose_opt


@click.command()
@click.argument("pred", required=False, type=click.Path())
@click.argument("label", required=False, type=click.Path())
@click.option("--dataset", default=None, help="KIND:PATH (ade20k, cityscapes, folder, rasters).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(),
    default=None,
    help="Dataset config (classes, palette, ignore) for folder: and rasters:.",
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
@click.option("--num-classes", type=int, default=None, help="Classes of a raster pair.")
@click.option("--ignore-index", type=int, default=255, show_default=True)
@click.option("--align", is_flag=True, help="Resample the label onto the prediction grid.")
@click.option("--block-size", type=int, default=2048, show_default=True)
@click.option("--workers", type=int, default=None, help="Local cluster of N processes.")
@click.option("--tile", type=int, default=None, help="Window side for --model.")
@click.option("--overlap", type=int, default=None, help="Window overlap for --model.")
@click.option(
    "--blend",
    type=click.Choice(["gaussian", "cosine", "mean", "crop"]),
    default="gaussian",
    show_default=True,
)
@click.option("--batch-size", type=int, default=4, show_default=True)
@device_opt
@click.option("--json", "json_out", type=click.Path(), default=None, help="Write all metrics.")
@click.option("--csv", "csv_out", type=click.Path(), default=None, help="Per-class table.")
@click.option("--plot", type=click.Path(), default=None, help="Confusion matrix + IoU PNG.")
@click.option("--error-map", type=click.Path(), default=None, help="Correct/wrong/ignored map.")
@overwrite_opt
@progress_opt
@quiet_opt
@verbose_opt
def evaluate(
    pred,
    label,
    dataset,
    config_file,
    split,
    model,
    pred_dir,
    pred_ids,
    num_classes,
    ignore_index,
    align,
    block_size,
    workers,
    tile,
    overlap,
    blend,
    batch_size,
    device,
    json_out,
    csv_out,
    plot,
    error_map,
    overwrite,
    progress,
    quiet,
):
    """Score PRED against LABEL (rasters), or a model / prediction folder on --dataset."""
    from geoseg.commands.progress import ProgressBar
    from geoseg.evaluate_report import check_outputs, report
    from geoseg.io.raster import raster_files
    from geoseg.metrics import summarize

    _check_numbers(
        num_classes=num_classes,
        block_size=block_size,
        workers=workers,
        tile=tile,
        batch_size=batch_size,
        overlap=overlap,
    )
    outputs = {"--json": json_out, "--csv": csv_out, "--plot": plot, "--error-map": error_map}
    root = dataset.partition(":")[2] if dataset else None
    inputs = [*raster_files(pred), *raster_files(label), config_file, model, pred_dir, root]
    check_outputs(outputs, overwrite, inputs)
    bar = ProgressBar("evaluate", unit="items", enabled=progress and not quiet)
    if dataset:
        if pred or label:
            raise click.UsageError("give either PRED LABEL or --dataset, not both")
        if error_map:
            raise click.UsageError("--error-map maps a PRED LABEL pair; drop it with --dataset")
        cm, names, notes, read = _dataset(
            dataset,
            config_file,
            split,
            model,
            pred_dir,
            pred_ids,
            tile,
            overlap,
            blend,
            batch_size,
            device,
            bar,
            check=lambda files: check_outputs(outputs, overwrite, inputs + files),
        )
        inputs += read
    else:
        if not (pred and label):
            raise click.UsageError("give PRED and LABEL rasters, or --dataset KIND:PATH")
        cm, names, notes = _pair(
            pred,
            label,
            num_classes,
            ignore_index,
            align,
            block_size,
            workers,
            error_map,
            overwrite,
            bar,
        )
    result = summarize(cm, names)
    report(
        result,
        notes,
        json_out=json_out,
        csv_out=csv_out,
        plot=plot,
        overwrite=overwrite,
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
    from geoseg.errors import ConfigError
    from geoseg.metrics import check_num_classes

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


def _pair(
    pred, label, num_classes, ignore_index, align, block_size, workers, error_map, overwrite, bar
):
    from geoseg.errors import ConfigError
    from geoseg.scoring import PairSpec, evaluate_pair, pair_classes

    try:
        num_classes, names = pair_classes(pred, num_classes)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--num-classes") from None
    spec = PairSpec(pred, label, num_classes, ignore_index, align)
    cm, notes = evaluate_pair(
        spec,
        block_size=block_size,
        workers=workers,
        error_map=error_map,
        overwrite=overwrite,
        progress=bar,
    )
    return cm, names, notes


def _dataset(
    spec,
    config_file,
    split,
    model,
    pred_dir,
    pred_ids,
    tile,
    overlap,
    blend,
    batch_size,
    device,
    bar,
    check,
):
    from pathlib import Path

    from geoseg.datasets import open_dataset
    from geoseg.scoring import evaluate_dataset, find_prediction

    ds = open_dataset(spec, config_file, split)
    read = [os.fspath(f) for pair in ds.pairs for f in (pair.image, pair.mask)]
    check(read)
    if pred_dir and not model and not Path(pred_dir).is_dir():
        from geoseg.errors import InputError

        raise InputError(f"--pred-dir {pred_dir} is not a folder; give the folder of predictions")
    k = len(ds.classes)
    notes = [f"{len(ds)} samples from {spec}; ignore index {ds.classes.ignore_index}"]
    miss = None
    if model:
        from geoseg.engine import Engine
        from geoseg.errors import InputError
        from geoseg.predict import predict_array

        engine = Engine.from_checkpoint(model, device=device or "auto")
        if engine.meta.classes != k:
            raise InputError(
                f"the model predicts {engine.meta.classes} classes but {spec} has {k}; "
                "evaluate a model trained on this class set"
            )
        t = tile or engine.meta.tile_size
        ov = overlap if overlap is not None else min(128, t // 4)

        def predict(sample):
            return predict_array(
                engine, sample["image"], tile=t, overlap=ov, blend=blend, batch_size=batch_size
            )

        notes.append(f"model {model}, tile {t}, overlap {ov}, blend {blend}")
    elif pred_dir:
        from geoseg.datasets.base import read_label_png

        cityscapes_label_ids = spec.startswith("cityscapes:") and pred_ids == "labelIds"
        if cityscapes_label_ids:
            from geoseg.datasets.cityscapes import MISS, label_ids_to_train_ids

            miss = MISS

        def predict(sample):
            ids = read_label_png(find_prediction(Path(pred_dir), sample["name"]))
            if cityscapes_label_ids:
                return label_ids_to_train_ids(ids, prediction=True)
            return ids

        notes.append(f"predictions from {pred_dir}" + (" (labelIds)" if miss is not None else ""))
    else:
        raise click.UsageError("--dataset needs --model CKPT or --pred-dir DIR")
    cm = evaluate_dataset(ds, predict, miss_value=miss, progress=bar)
    if pred_dir:
        _check_encoding(cm, spec, pred_dir)
    return cm, list(ds.classes.names), notes, read


def _check_encoding(cm, spec: str, pred_dir: str) -> None:
    """Refuse predictions that are one class off everywhere (an encoding mistake, not a score)."""
    from geoseg.errors import LabelError
    from geoseg.metrics import shifted_share

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
