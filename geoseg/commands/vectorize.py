"""``geoseg vectorize``: a class map as one polygon layer (.gpkg, .fgb, .geojson, .parquet)."""

from __future__ import annotations

import click

from geoseg.commands.options import Command, overwrite_opt, progress_opt, quiet_opt, verbose_opt


@click.command("vectorize", cls=Command)
@click.argument("classmap", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--simplify",
    default=None,
    metavar="TOLERANCE",
    help=(
        "Simplify each polygon (map units, topology-preserving); neighbours are simplified "
        "apart, so slivers may open between them."
    ),
)
@click.option(
    "--min-area",
    default=None,
    metavar="AREA",
    help="Drop smaller polygons: map units (25), square metres (500m2) or hectares (0.5ha).",
)
@click.option(
    "--block-size",
    type=int,
    default=2048,
    show_default=True,
    help="Side of the blocks read at a time (memory ~9 bytes per block pixel).",
)
@overwrite_opt
@progress_opt
@quiet_opt
@verbose_opt
def vectorize(classmap, out, simplify, min_area, block_size, overwrite, progress, quiet) -> None:
    """Write the classes of CLASSMAP as polygons to OUT (.gpkg, .fgb, .geojson, .parquet).

    One layer "classes" in the class map's CRS, with class_id and class_name; nodata is left
    out. The map is read block by block and pieces are joined across block edges, so the
    polygons are the same as those of the whole map at once, in bounded memory.
    --overwrite replaces only a file that geoseg vectorize wrote.
    """
    from geoseg.commands.progress import ProgressBar
    from geoseg.run.vector import vectorize as run

    bar = ProgressBar("vectorize", unit="blocks", enabled=progress and not quiet)
    summary = run(
        classmap,
        out,
        simplify=simplify,
        min_area=min_area,
        block_size=block_size,
        overwrite=overwrite,
        progress=bar,
    )
    dropped = f", {summary.dropped} below --min-area left out" if summary.dropped else ""
    click.echo(
        f"vectorize: {summary.polygons} polygons of {len(summary.classes)} classes "
        f"({summary.pixels} pixels){dropped} -> {summary.path}"
    )
