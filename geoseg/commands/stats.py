"""``geoseg stats``: per-class pixel counts, areas and shares of a class map (zonal with --aoi)."""

from __future__ import annotations

import click

from geoseg.commands.options import (
    Command,
    overwrite_opt,
    progress_opt,
    quiet_opt,
    report_opt,
    verbose_opt,
)


@click.command(cls=Command)
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
@report_opt("--json", "the statistics as JSON")
@report_opt("--csv", "one row per (zone, class) as CSV")
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
    from geoseg.report.outputs import check_stdout, emit, file_outputs
    from geoseg.run.class_stats import class_stats, vector_files

    if aoi_field is not None and aoi is None:
        raise click.UsageError("--aoi-field names polygons of --aoi; give --aoi too")
    outputs = {"--json": json_out, "--csv": csv_out}
    check_stdout(outputs)
    files = file_outputs(outputs)
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
    renders = {"--json": result.to_json, "--csv": result.to_csv}
    emit(result.table(), renders, outputs, overwrite, inputs)
