"""``geoseg train`` and ``geoseg finetune``: train a model on labelled chips."""

from __future__ import annotations

import shlex
import sys
from typing import Any, get_args

import click

from geoseg.commands.options import (
    Command,
    device_opt,
    overwrite_opt,
    parse_key_values,
    precision_opt,
    progress_opt,
    quiet_opt,
    verbose_opt,
)
from geoseg.train.config import Sampling, Schedule


def _parse_class_map(values: tuple[str, ...]) -> dict[str, str] | None:
    out = {}
    for item in values:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise click.BadParameter(
                f"{item!r} is not OLD=NEW (e.g. --class-map Road=Paved)",
                param_hint="--class-map",
            )
        out[old.strip()] = new.strip()
    return out or None


def _common(f):
    options = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False),
            help="YAML training config (configs/train_*.yaml).",
        ),
        click.option(
            "--out",
            required=True,
            type=click.Path(file_okay=False),
            help="Run directory: best/ and last/ checkpoints, log.csv.",
        ),
        click.option(
            "--train",
            "train_src",
            multiple=True,
            help="Training source 'folder:PATH' (repeatable; replaces the config's).",
        ),
        click.option(
            "--val", "val_src", multiple=True, help="Validation source 'folder:PATH' (repeatable)."
        ),
        click.option("--epochs", type=int),
        click.option("--batch-size", type=int),
        click.option("--chip-size", type=int),
        click.option("--chips-per-epoch", type=int),
        click.option("--loss", help="Loss terms joined by '+': ce, dice, focal, lovasz."),
        click.option("--sampling", type=click.Choice(get_args(Sampling))),
        click.option("--class-balanced/--no-class-balanced", default=None),
        click.option("--schedule", type=click.Choice(get_args(Schedule))),
        click.option("--seed", type=int),
        click.option(
            "--align",
            is_flag=True,
            default=None,
            help="Resample label rasters onto the image grid when they differ.",
        ),
        click.option("--threads", "num_threads", type=int, help="CPU threads for torch."),
        device_opt,
        precision_opt,
        click.option("--set", "sets", multiple=True, help="Any config option: KEY=VALUE (YAML)."),
        click.option("--resume", is_flag=True, help="Continue the interrupted run in --out."),
        overwrite_opt,
        progress_opt,
        quiet_opt,
        verbose_opt,
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


# finetune's own defaults: below the config file and the flags (defaults < file < flags)
FINETUNE_DEFAULTS = {"lr": 1e-4}


def _config(config_path, overrides: dict[str, Any], sets: tuple[str, ...], defaults=None):
    from geoseg.config import load_yaml
    from geoseg.train.config import build_train_config

    base = load_yaml(config_path) if config_path else {}
    sets_layer = parse_key_values(sets, "--set", "lr=3e-4")
    return build_train_config(defaults, base, overrides, sets_layer)


def _overrides(kw: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "epochs",
        "batch_size",
        "chip_size",
        "chips_per_epoch",
        "loss",
        "sampling",
        "class_balanced",
        "schedule",
        "seed",
        "align",
        "num_threads",
        "device",
        "precision",
        "arch",
        "encoder",
        "lr",
        "freeze_encoder",
    )
    out = {k: kw.get(k) for k in keys}
    out["train"] = list(kw["train_src"]) or None
    out["val"] = list(kw["val_src"]) or None
    return out


def _callbacks(progress: bool, quiet: bool):
    from geoseg.commands.progress import ProgressBar
    from geoseg.train.loop import Callbacks

    bar: dict[str, Any] = {}

    def on_step(info) -> None:
        if "b" not in bar:
            enabled = progress and not quiet
            bar["b"] = ProgressBar(f"epoch {info.epoch}", "steps", enabled=enabled, leave=False)
        bar["b"].note(loss=f"{info.loss:.3f}", lr=f"{info.lr:.1e}")
        bar["b"](info.step, info.steps)

    def on_validate(done: int, total: int) -> None:
        if "v" not in bar:
            enabled = progress and not quiet
            bar["v"] = ProgressBar("validation", "images", enabled=enabled, leave=False)
        bar["v"](done, total)

    def on_epoch(row) -> None:
        for key in ("b", "v"):
            if key in bar:
                bar.pop(key).close()
        if not quiet:
            miou = row.get("val_miou")
            m = f" val mIoU {miou:.4f}" if miou is not None else ""
            click.echo(
                f"epoch {row['epoch']}: loss {row['train_loss']:.4f}{m} ({row['seconds']:.0f} s)",
                err=True,
            )

    return Callbacks(on_step, on_epoch, on_validate)


def summary_table(result) -> str:
    """The final summary: best epoch, per-class IoU and where the checkpoints are."""
    rows = result.state.rows
    best = next((r for r in rows if r["epoch"] == result.state.best_epoch), rows[-1])
    lines = [
        f"run {result.run.path}: {result.train_count} training / {result.val_count} "
        f"validation samples, {result.state.epoch} epochs, {result.state.step} steps"
    ]
    if "val_miou" in best:
        lines.append(f"best epoch {best['epoch']}: val mIoU {best['val_miou']:.4f}")
        lines.append(f"  {'class':<20} {'IoU':>7}")
        for key, value in best.items():
            if key.startswith("iou_"):
                lines.append(f"  {key[4:]:<20} {value:>7.4f}")
    lines.append(f"best checkpoint: {result.run.best}")
    return "\n".join(lines)


@click.command("train", cls=Command)
@_common
@click.option("--arch", help="smp architecture, e.g. unet, unetplusplus, fpn, deeplabv3plus.")
@click.option("--encoder", help="smp encoder, e.g. resnet18, mobilenet_v2.")
@click.option("--lr", type=float, help="Peak learning rate of AdamW.")
def train(config_path, out, sets, resume, overwrite, progress, quiet, **kw) -> None:
    """Train a segmentation model on labelled chips into the run directory --out."""
    from geoseg.train.session import run_training

    cfg = _config(config_path, _overrides(kw), sets)
    result = run_training(
        cfg,
        out,
        resume=resume,
        overwrite=overwrite,
        command=shlex.join(["geoseg", *sys.argv[1:]]),
        callbacks=_callbacks(progress, quiet),
    )
    click.echo(summary_table(result))


@click.command("finetune", cls=Command)
@click.option(
    "--model", "model_path", required=True, type=click.Path(), help="Checkpoint to start from."
)
@_common
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Learning rate [default: the config's, else 1e-4, lower than training from scratch].",
)
@click.option("--freeze-encoder", is_flag=True, default=None, help="Train only the decoder/head.")
@click.option(
    "--class-map",
    "class_map",
    multiple=True,
    help="OLD=NEW: initialise new class NEW's head from old class OLD (repeatable).",
)
def finetune(
    model_path, config_path, out, sets, resume, overwrite, progress, quiet, class_map, **kw
) -> None:
    """Fine-tune a checkpoint on labelled chips of a new region (classes may change)."""
    from geoseg.train.session import run_training

    over = _overrides(kw)
    over["class_map"] = _parse_class_map(class_map)
    cfg = _config(config_path, over, sets, FINETUNE_DEFAULTS)
    result = run_training(
        cfg,
        out,
        init=model_path,
        resume=resume,
        overwrite=overwrite,
        command=shlex.join(["geoseg", *sys.argv[1:]]),
        callbacks=_callbacks(progress, quiet),
    )
    click.echo(summary_table(result))
