"""``geoseg tiles``: the window grid predict would use, as a summary and as GeoJSON."""

from __future__ import annotations

import click

from geoseg.commands.options import Command, overwrite_opt, progress_opt, verbose_opt

# A window is read as float32 (bands, tile, tile); beyond this one window does not fit the
# memory a worker should use (predict reads whole windows, padded past the raster's edge).
MAX_WINDOW_BYTES = 1 << 30


# Without --model, the tile of geoseg's own checkpoints (ModelMeta.tile_size's default).
DEFAULT_TILE = 512


@click.command(cls=Command)
@click.argument("input", type=click.Path(dir_okay=True))
@click.option(
    "--model",
    type=click.Path(),
    default=None,
    help="Checkpoint whose tile size predict would use [default tile: 512].",
)
@click.option("--tile", type=int, default=None, help="Window side [default: the model's].")
@click.option(
    "--overlap", type=int, default=None, help="Window overlap [default: predict's, 128 at most]."
)
@click.option("--bands", default=None, help="Bands whose nodata decides skipping, e.g. 1,2,3.")
@click.option("--geojson", type=click.Path(), default=None, help="Write windows as GeoJSON.")
@click.option(
    "--crs",
    "geojson_crs",
    type=click.Choice(["wgs84", "native"]),
    default="wgs84",
    show_default=True,
    help="GeoJSON coordinates: WGS84 lon/lat (RFC 7946) or the raster's own CRS.",
)
@click.option(
    "--skip-check/--no-skip-check",
    default=True,
    show_default=True,
    help="Read each window's mask to count windows predict would skip.",
)
@overwrite_opt
@progress_opt
@verbose_opt
def tiles(
    input, model, tile, overlap, bands, geojson, geojson_crs, skip_check, overwrite, progress
):
    """Print the window grid predict would use over INPUT (windows, skipped, stride, coverage)."""
    from geoseg.commands.predict import parse_bands
    from geoseg.commands.progress import ProgressBar
    from geoseg.io.files import check_target
    from geoseg.io.raster import check_input_file, open_raster, raster_files
    from geoseg.report.tiles import grid_report, write_geojson
    from geoseg.run.pipeline import default_overlap
    from tilers.grid import Grid, validate_tiling

    band_sel = parse_bands(click.get_current_context(), None, bands)
    if tile is None:
        tile = _model_tile(model) if model else DEFAULT_TILE
    overlap = default_overlap(overlap, tile)
    validate_tiling((tile, tile), (overlap, overlap))
    if geojson:
        check_target(
            geojson, overwrite=overwrite, inputs=[*raster_files(input), model], what="--geojson"
        )
    check_input_file(input, "input raster", folder_ok=True)
    with open_raster(input, band_sel) as source:
        info = source.info
        check_window_memory(tile, info.count)
        grid = Grid.create(info.height, info.width, tile, overlap)
        bar = ProgressBar("tiles", enabled=progress and skip_check)
        report = grid_report(grid, source if skip_check else None, progress=bar)
    for key, value in report.rows():
        click.echo(f"{key:<12} {value}")
    if geojson:
        write_geojson(
            geojson,
            grid,
            info,
            report.skipped_indices,
            overwrite=overwrite,
            inputs=[*raster_files(input), model],
            native=geojson_crs == "native",
        )
        click.echo(f"wrote {len(grid)} windows to {geojson}")


def check_window_memory(tile: int, bands: int) -> None:
    """Refuse a ``--tile`` whose float32 window of ``bands`` bands exceeds 1 GiB."""
    size = tile * tile * max(bands, 1) * 4
    if size > MAX_WINDOW_BYTES:
        largest = int((MAX_WINDOW_BYTES / (4 * max(bands, 1))) ** 0.5)
        raise click.BadParameter(
            f"{tile}: one {tile}x{tile} window of {bands} band(s) needs {size / 2**30:.1f} GiB "
            f"as float32; use at most --tile {largest} (e.g. --tile 512)",
            param_hint="--tile",
        )


def _model_tile(model: str) -> int:
    """The tile size ``geoseg predict --model MODEL`` uses by default."""
    from geoseg.model.checkpoint import read_meta

    return read_meta(model).tile_size
