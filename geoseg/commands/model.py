"""``geoseg model``: create and inspect checkpoints."""

from __future__ import annotations

import json
import math

import click

from geoseg.commands.options import Group, overwrite_opt, parse_key_values, report_opt, verbose_opt
from geoseg.errors import ConfigError
from geoseg.model.checkpoint import check_checkpoint_target


@click.group(cls=Group)
def model() -> None:
    """Create and inspect geoseg checkpoints."""


def _check_create(classes: int, bands: int, tile: int, scale: float, seed: int) -> None:
    """Refuse absurd ``model create`` values before anything is allocated."""
    from geoseg.model.checkpoint import MAX_BANDS, MAX_CLASSES, MAX_TILE

    if not 1 <= bands <= MAX_BANDS:
        raise ConfigError(
            f"--bands {bands} must be in 1..{MAX_BANDS} (no imagery has more bands; the first "
            "layer grows with the band count)"
        )
    if not 1 <= classes <= MAX_CLASSES:
        raise ConfigError(
            f"--classes {classes} must be in 1..{MAX_CLASSES} (class maps are at most uint16)"
        )
    if not 1 <= tile <= MAX_TILE:
        raise ConfigError(f"--tile {tile} must be in 1..{MAX_TILE} px")
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"--scale {scale} must be a finite number > 0 (255 for 8-bit imagery)")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"--seed {seed} must be in 0..2**63-1")


@model.command("create")
@click.argument("out", type=click.Path())
@click.option("--arch", default="unet", show_default=True, help="smp architecture name.")
@click.option("--encoder", default="resnet18", show_default=True, help="smp encoder name.")
@click.option("--classes", type=int, required=True, help="Number of classes.")
@click.option("--bands", type=int, default=3, show_default=True, help="Input bands.")
@click.option("--class-names", default=None, help="Comma-separated class names.")
@click.option("--tile", type=int, default=512, show_default=True, help="Default tile size.")
@click.option(
    "--scale",
    type=float,
    default=255.0,
    show_default=True,
    help="Raw values are divided by this before normalization.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Initialization seed.")
@click.option("--option", "options", multiple=True, help="smp.create_model key=value (YAML).")
@overwrite_opt
@verbose_opt
def create(out, arch, encoder, classes, bands, class_names, tile, scale, seed, options, overwrite):
    """Write a randomly initialized checkpoint to OUT."""
    import torch

    from geoseg.model.checkpoint import ModelMeta, build_model, default_colours, save_checkpoint

    _check_create(classes, bands, tile, scale, seed)
    names = class_names.split(",") if class_names else [f"class_{i}" for i in range(classes)]
    if len(names) != classes or not all(n.strip() for n in names):
        raise ConfigError(
            f"--class-names {class_names!r} gives {len(names)} names for --classes {classes}; "
            "give one non-empty name per class, comma-separated"
        )
    check_checkpoint_target(out, overwrite, what="OUT")
    meta = ModelMeta(
        arch=arch,
        encoder=encoder,
        in_channels=bands,
        classes=classes,
        class_names=[n.strip() for n in names],
        colours=default_colours(classes),
        mean=[0.5] * bands,
        std=[0.25] * bands,
        scale=scale,
        tile_size=tile,
        model_options=parse_key_values(options, "--option", "encoder_depth=3"),
        extra={"created_by": "geoseg model create", "seed": seed},
    )
    torch.manual_seed(seed)
    net = build_model(meta)
    save_checkpoint(net, meta, out, overwrite=overwrite)
    n = sum(p.numel() for p in net.parameters())
    click.echo(
        f"wrote {out}: {arch}/{encoder}, {bands} bands -> {classes} classes, {n:,} parameters"
    )


@model.command("info")
@click.argument("ckpt", type=click.Path())
@report_opt("--json", "the metadata as JSON")
@overwrite_opt
def info(ckpt, json_out, overwrite):
    """Print the metadata of checkpoint CKPT (--json: also as JSON, to a file or -)."""
    from geoseg.io.files import check_target
    from geoseg.model.checkpoint import read_meta
    from geoseg.report.outputs import STDOUT, emit

    if json_out and json_out != STDOUT:
        check_target(json_out, overwrite=overwrite, inputs=[ckpt], what="--json")
    meta = read_meta(ckpt)
    renders = {"--json": lambda: json.dumps(meta.to_dict(), indent=2) + "\n"}
    emit(_table(meta), renders, {"--json": json_out}, overwrite, [ckpt])


def _table(meta) -> str:
    """The metadata as aligned text lines."""
    lines = [
        f"architecture   {meta.arch} / {meta.encoder}",
        f"input          {meta.in_channels} bands, scale 1/{meta.scale:g}",
        f"normalization  mean {meta.mean} std {meta.std}",
        f"tile size      {meta.tile_size}",
    ]
    if meta.model_options:
        lines.append(f"options        {meta.model_options}")
    lines.append(f"classes        {meta.classes}")
    for i, (name, c) in enumerate(zip(meta.class_names, meta.colours, strict=True)):
        lines.append(f"  {i:3d}  #{c[0]:02x}{c[1]:02x}{c[2]:02x}  {name}")
    lines += [f"{key:<14} {value}" for key, value in meta.extra.items()]
    return "\n".join(lines)
