"""``geoseg predict``: segment a raster into a georeferenced class map."""

from __future__ import annotations

import click

from geoseg.commands.options import (
    device_opt,
    overwrite_opt,
    precision_opt,
    progress_opt,
    quiet_opt,
    verbose_opt,
)


def parse_bands(ctx: click.Context, param: click.Parameter, value: str | None):
    """Parse ``--bands 4,3,2`` into a tuple of 1-based band indexes."""
    if value is None:
        return None
    try:
        bands = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of band numbers; e.g. --bands 4,3,2"
        ) from None
    if not bands or any(b < 1 for b in bands):
        raise click.BadParameter(f"{value!r}: band numbers start at 1; e.g. --bands 1,2,3")
    return bands


@click.command()
@click.argument("input", type=click.Path(dir_okay=True))
@click.argument("output", type=click.Path())
@click.option("--model", "model", required=True, type=click.Path(), help="Checkpoint directory.")
@click.option("--tile", type=int, default=None, help="Window side [default: model's tile size].")
@click.option(
    "--overlap",
    type=int,
    default=None,
    help="Overlap between windows [default: 128, at most tile/4].",
)
@click.option(
    "--blend",
    type=click.Choice(["gaussian", "cosine", "mean", "crop"]),
    default=None,
    help="Blend weights [default: gaussian].",
)
@click.option("--block-size", type=int, default=None, help="Output block side [default: 2048].")
@click.option("--batch-size", type=int, default=None, help="Windows per model call [auto].")
@click.option("--workers", type=int, default=None, help="Start a local cluster of N processes.")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler.")
@device_opt
@precision_opt
@click.option(
    "--tta",
    type=click.Choice(["none", "flip", "d4"]),
    default=None,
    help="Test-time augmentation [default: none].",
)
@click.option("--bands", callback=parse_bands, default=None, help="Bands to use, e.g. 4,3,2.")
@click.option("--probabilities", is_flag=True, default=None, help="Also store probabilities.")
@click.option("--cog", is_flag=True, default=None, help="Write a Cloud-Optimized GeoTIFF.")
@click.option("--config", "config_file", type=click.Path(), default=None, help="YAML options.")
@overwrite_opt
@progress_opt
@quiet_opt
@verbose_opt
def predict(input, output, model, config_file, overwrite, progress, quiet, **flags):
    """Segment INPUT into the class map OUTPUT (.tif, .tiff or .zarr)."""
    from geoseg.commands.progress import ProgressBar
    from geoseg.config import PredictConfig, build_config, load_yaml
    from geoseg.pipeline import predict_file

    file_opts = load_yaml(config_file) if config_file else None
    cfg = build_config(PredictConfig, file_opts, flags)
    bar = ProgressBar("predict", enabled=progress and not quiet)
    summary = predict_file(input, output, model, cfg, overwrite=overwrite, progress=bar)
    click.echo(summary.line())
