"""``geoseg stats``: per-class pixel counts, areas and shares of a class map (zonal with --aoi)."""

from __future__ import annotations

import click

from geoseg.commands.options import overwrite_opt, progress_opt, quiet_opt, verbose_opt

STDOUT = "-"


@click.command()
@click.argument("classmap", type=click.Path())
@click.option(
    "--aoi",
    type=click.Path(),
    default=None,
    metavar="POLYGONS",
    help="Polygons (GeoPackage, GeoJSON, Shapefile, any OGR format): statistics per polygon.",
)
@click.option(
    "--aoi-field",
    default=None,
    help="Field of --aoi whose values name the polygons [default: feature ids].",
)
@click.option(
    "--nodata",
    type=int,
    multiple=True,
    help="Also leave out this class id, e.g. -1 where the map has no nodata tag (repeatable).",
)
@click.option(
    "--block-size",
    type=int,
    default=2048,
    show_default=True,
    help="Side of the blocks read at a time (memory: about 40 bytes a pixel of one block).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(allow_dash=True),
    default=None,
    metavar="FILE",
    help="Write the statistics as JSON to FILE (- for stdout).",
)
@click.option(
    "--csv",
    "csv_out",
    type=click.Path(allow_dash=True),
    default=None,
    metavar="FILE",
    help="Write one row per (zone, class) as CSV to FILE (- for stdout).",
)
@overwrite_opt
@progress_opt
@quiet_opt
@verbose_opt
def stats(
    classmap, aoi, aoi_field, nodata, block_size, json_out, csv_out, overwrite, progress, quiet
):
    """Print per-class pixels, areas (m2, ha) and shares of CLASSMAP, per polygon with --aoi.

    Areas are geodesic on a geographic CRS and planar otherwise; nodata is left out and
    shares are of the valid area. The table goes to stdout unless --json or --csv is -.
    """
    from geoseg.commands.progress import ProgressBar
    from geoseg.io.raster import raster_files
    from geoseg.report.evaluate import check_outputs
    from geoseg.run.class_stats import class_stats, vector_files

    if json_out == STDOUT and csv_out == STDOUT:
        raise click.UsageError("--json - and --csv - would both write to stdout; give one a file")
    if aoi_field is not None and aoi is None:
        raise click.UsageError("--aoi-field names polygons of --aoi; give --aoi too")
    outputs = {"--json": json_out, "--csv": csv_out}
    files = {opt: path for opt, path in outputs.items() if path and path != STDOUT}
    inputs = [*raster_files(classmap), *vector_files(aoi)]
    check_outputs(files, overwrite, inputs)
    bar = ProgressBar("stats", unit="blocks", enabled=progress and not quiet)
    result = class_stats(
        classmap,
        aoi,
        block_size=block_size,
        nodata=nodata,
        aoi_field=aoi_field,
        progress=bar,
    )
    if not quiet:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
    _emit(result, outputs, overwrite, inputs)


def _emit(result, outputs: dict, overwrite: bool, inputs: list) -> None:
    """The table on stdout (unless an output is stdout), then each requested output."""
    from geoseg.io.files import atomic_write

    if STDOUT not in outputs.values():
        click.echo(result.table())
    render = {"--json": result.to_json, "--csv": result.to_csv}
    for opt, path in outputs.items():
        if path == STDOUT:
            click.echo(render[opt](), nl=False)
        elif path:
            atomic_write(path, render[opt](), overwrite=overwrite, inputs=inputs, what=opt)
