"""``geoseg adapt``: adapt a checkpoint to a new region's unlabelled rasters."""

from __future__ import annotations

import dataclasses

import click

from geoseg.commands.options import Command, overwrite_opt, progress_opt, quiet_opt, verbose_opt
from geoseg.errors import ConfigError


@click.command("adapt", cls=Command)
@click.argument("rasters", nargs=-1, required=True)
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(),
    help="Checkpoint trained on the source region.",
)
@click.option("--out", required=True, type=click.Path(), help="Adapted checkpoint directory.")
@click.option(
    "--method",
    "method",
    required=True,
    help="Comma-separated: hist, stats, adabn, tent, self-training. No default: none gains "
    "reliably on the new-region experiments (README), so choose knowingly.",
)
@click.option(
    "--histograms",
    type=click.Path(),
    default=None,
    help='Training histograms for hist (JSON {"quantiles": ...}) [default: the checkpoint\'s].',
)
@click.option(
    "--tile", type=int, default=256, show_default=True, help="Side of each target window (px)."
)
@click.option(
    "--windows",
    type=int,
    default=64,
    show_default=True,
    help="Random target windows to adapt on (spread over the rasters).",
)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--tent-steps", type=int, default=40, show_default=True)
@click.option("--rounds", type=int, default=2, show_default=True, help="Self-training rounds.")
@click.option(
    "--steps", type=int, default=60, show_default=True, help="Self-training steps per round."
)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Self-training LR.")
@click.option(
    "--fraction",
    type=float,
    default=0.5,
    show_default=True,
    help="Most confident fraction of each class kept as pseudo-labels.",
)
@click.option(
    "--consistency/--no-consistency",
    default=True,
    show_default=True,
    help="tent and self-training learn from strongly augmented views too.",
)
@click.option(
    "--curriculum/--no-curriculum",
    default=False,
    show_default=True,
    help="Self-training keeps fraction x round / rounds of each class: surest pixels first.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", "num_threads", type=int, help="CPU threads for torch.")
@overwrite_opt
@progress_opt
@quiet_opt
@verbose_opt
def adapt(
    rasters, model_path, out, method, histograms, num_threads, overwrite, progress, quiet, **opts
):
    """Adapt a checkpoint to unlabelled RASTERS of a new region (no labels needed)."""
    from geoseg.model.checkpoint import check_checkpoint_target, load_checkpoint, save_checkpoint
    from geoseg.model.engine import kept_torch_threads
    from geoseg.train import adapt as ad

    cfg = ad.AdaptConfig(ad.parse_methods(method), **opts)  # bad values: Command names the flag
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"--threads {num_threads} must be at least 1")
    paths = ad.expand_paths(rasters)
    inputs = [model_path, *paths, *([histograms] if histograms else [])]
    check_checkpoint_target(out, overwrite, inputs=inputs, what="--out")
    with kept_torch_threads():
        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        model, meta = load_checkpoint(model_path)
        if histograms:
            meta = ad.read_histograms(histograms, meta)
        target = ad.sample_windows(paths, cfg.tile, cfg.windows, cfg.seed, meta)
        ad.check_target(target)
        before = ad.prediction_confidence(model, meta, target, cfg.batch_size)
        on_method, on_step = _reporters(progress and not quiet, quiet)
        meta = ad.adapt(model, meta, target, cfg, on_method, on_step)
        after = ad.prediction_confidence(model, meta, target, cfg.batch_size)
    changes = {"confidence": [before[0], after[0]], "entropy": [before[1], after[1]]}
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "methods"}
    extra = dict(meta.extra, adapted_from=str(model_path), adapt_rasters=paths,
                 adapt_options=options, **changes)  # fmt: skip
    save_checkpoint(model, meta.replace(extra=extra), out, overwrite=overwrite)
    click.echo(f"adapted checkpoint ({', '.join(cfg.methods)}): {out}")
    click.echo(
        f"on the {len(target.data)} target windows: mean confidence {before[0]:.3f} -> "
        f"{after[0]:.3f}, mean entropy {before[1]:.3f} -> {after[1]:.3f} (0 certain, 1 uniform)"
    )


def _reporters(bars: bool, quiet: bool):
    """``on_method(name)`` (a line, and a fresh progress bar) and ``on_step(done, total)``."""
    from geoseg.commands.progress import ProgressBar

    current: dict[str, ProgressBar] = {}

    def on_method(name: str) -> None:
        if not quiet:
            click.echo(f"adapt: {name}", err=True)
        current["bar"] = ProgressBar(f"adapt {name}", "steps", enabled=bars)

    def on_step(done: int, total: int) -> None:
        current["bar"](done, total)

    return on_method, on_step
