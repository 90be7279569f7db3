"""``geoseg predict``: segment a raster into a georeferenced class map."""

from __future__ import annotations

import contextlib
import dataclasses

import click

from geoseg.commands.options import (
    Command,
    blend_opt,
    dashboard_opt,
    device_opt,
    overwrite_opt,
    precision_opt,
    progress_opt,
    quiet_opt,
    tta_opt,
    uncertainty_opt,
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


def parse_numbers(ctx: click.Context, param: click.Parameter, value: str | None):
    """Parse ``--scale 0.0001`` or ``--scale 0.0001,0.0001,0.0001`` into a tuple of floats."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a number or comma-separated numbers (one per band); e.g. 0.0001"
        ) from None


def parse_names(ctx: click.Context, param: click.Parameter, value: str | None):
    """Parse ``--assets red,green,blue`` into a tuple of names."""
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def parse_creation_options(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]):
    """Parse repeated ``--co KEY=VALUE`` (as ``rio --co``) into a dict, values kept as text.

    Keys and values are checked with the rest of the options (``PredictConfig``); None when
    no ``--co`` is given, so a config file's ``creation_options`` stays in force.
    """
    if not values:
        return None
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE; e.g. --co COMPRESS=ZSTD")
        out[key.strip()] = value.strip()
    return out


@click.command(cls=Command)
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=True))
@click.option("--model", "model", required=True, type=click.Path(), help="Checkpoint directory.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Batch mode: every PATH is an input (globs allowed); outputs go here.",
)
@click.option(
    "--name",
    "name_pattern",
    default="{stem}_classes.tif",
    show_default=True,
    help="Batch output name ({stem}, {name}, {parent}); .tif or .zarr.",
)
@click.option(
    "--from-list",
    type=click.Path(),
    default=None,
    help="Batch mode: a text file with one input path per line.",
)
@click.option("--tile", type=int, default=None, help="Window side [default: model's tile size].")
@click.option(
    "--overlap",
    type=int,
    default=None,
    help="Overlap between windows [default: 128, at most tile/4].",
)
@blend_opt
@click.option("--block-size", type=int, default=None, help="Output block side [default: 2048].")
@click.option("--batch-size", type=int, default=None, help="Windows per model call [auto].")
@click.option("--workers", type=int, default=None, help="Start a local cluster of N processes.")
@click.option(
    "--rasters-in-flight",
    type=int,
    default=None,
    help="Rasters of a batch predicted at once [default: 2].",
)
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler.")
@dashboard_opt
@device_opt
@precision_opt
@tta_opt
@click.option(
    "--compile",
    is_flag=True,
    default=None,
    help="Compile the model with torch.compile (measure first: it pays off on long GPU runs).",
)
@click.option("--bands", callback=parse_bands, default=None, help="Bands to use, e.g. 4,3,2.")
@click.option(
    "--assets",
    callback=parse_names,
    default=None,
    help="STAC input: the assets to stack, in order (keys or eo:bands names), e.g. red,green,blue.",
)
@click.option(
    "--scale",
    callback=parse_numbers,
    default=None,
    help="Map raw values to raw*scale+offset before the model (one value, or one per band).",
)
@click.option(
    "--offset",
    callback=parse_numbers,
    default=None,
    help="Added after --scale (one value, or one per band) [default: 0, or STAC raster:bands].",
)
@click.option("--probabilities", is_flag=True, default=None, help="Also store probabilities.")
@click.option("--cog", is_flag=True, default=None, help="Write a Cloud-Optimized GeoTIFF.")
@click.option(
    "--confidence",
    is_flag=True,
    default=None,
    help="Also write {stem}_confidence.tif: the winning class's probability (uint8, p*254).",
)
@uncertainty_opt
@click.option(
    "--nodata",
    type=int,
    default=None,
    help="Class-map nodata value, above every class id [default: 255; 65535 above 255 classes].",
)
@click.option(
    "--co",
    "creation_options",
    multiple=True,
    callback=parse_creation_options,
    metavar="KEY=VALUE",
    help="GeoTIFF creation option, repeatable (e.g. --co COMPRESS=ZSTD --co BLOCKXSIZE=256).",
)
@click.option(
    "--vector",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the class map's polygons here (.gpkg, .fgb, .geojson, .parquet).",
)
@click.option("--stats", is_flag=True, help="Also print per-class pixels, areas and shares.")
@click.option("--config", "config_file", type=click.Path(), default=None, help="YAML options.")
@click.option("--resume", is_flag=True, help="Continue a killed run (GeoTIFF outputs).")
@overwrite_opt
@progress_opt
@quiet_opt
@verbose_opt
def predict(
    paths,
    model,
    output_dir,
    name_pattern,
    from_list,
    vector,
    stats,
    config_file,
    resume,
    overwrite,
    progress,
    quiet,
    **flags,
):
    """Segment INPUT into the class map OUTPUT (.tif, .tiff or .zarr).

    Usage: ``geoseg predict INPUT OUTPUT --model CKPT``, or for many rasters
    ``geoseg predict IN1 IN2 'scenes/*.tif' --output-dir DIR --model CKPT``.
    """
    from geoseg.config import PredictConfig, build_config, load_yaml
    from geoseg.run.scheduling import default_scheduler

    file_opts = load_yaml(config_file) if config_file else None
    cfg = build_config(PredictConfig, file_opts, flags)
    cfg = dataclasses.replace(cfg, scheduler=default_scheduler(cfg.workers, cfg.scheduler))
    if output_dir or from_list:
        if vector:
            raise click.UsageError(
                "--vector writes the polygons of one class map; for a batch, run "
                "geoseg vectorize on each output"
            )
        run = (cfg, overwrite, progress, quiet, resume, stats)
        _batch(paths, from_list, output_dir, name_pattern, model, *run, [config_file, from_list])
        return
    if len(paths) != 2:
        raise click.UsageError(
            f"expected INPUT OUTPUT, got {len(paths)} path(s); for many inputs add --output-dir"
        )
    _single(*paths, model, cfg, config_file, resume, overwrite, progress, quiet, vector, stats)


def _single(src, out, model, cfg, config_file, resume, overwrite, progress, quiet, vector, stats):
    """One raster: its class map, then (when asked) its polygons and per-class areas."""
    from geoseg.commands.progress import ProgressBar
    from geoseg.io.raster import raster_files
    from geoseg.io.writers import touched_paths
    from geoseg.run.pipeline import predict_file
    from geoseg.run.vector import check_output

    outputs = touched_paths(out)
    if vector:  # refused before any work, like every other output
        read = [*raster_files(src), model, config_file, *outputs]
        check_output(out, vector, overwrite, inputs=read)
    existed = {p for p in outputs if p.exists() or p.is_symlink()}
    bar = ProgressBar("predict", enabled=progress and not quiet)
    # without --workers/--scheduler, predict_file starts (and stops) its in-process cluster
    wanted = cfg.workers or cfg.scheduler or cfg.dashboard
    with _cluster(cfg) if wanted else contextlib.nullcontext() as client:
        summary = predict_file(
            src, out, model, cfg, overwrite=overwrite, progress=bar, client=client,
            resume=resume, other_inputs=[config_file],
        )  # fmt: skip
    click.echo(summary.line())
    try:
        _after(out, vector, stats, overwrite, progress and not quiet)
    except BaseException:
        _remove_new(outputs, existed)  # a failed command leaves what was there before
        raise


def _after(classmap, vector, stats, overwrite, progress) -> None:
    """``--vector`` and ``--stats`` of a finished class map."""
    from geoseg.commands.progress import ProgressBar

    if vector:
        from geoseg.run.vector import vectorize

        bar = ProgressBar("vectorize", unit="blocks", enabled=progress)
        v = vectorize(classmap, vector, overwrite=overwrite, progress=bar)
        click.echo(f"vectorize: {v.polygons} polygons of {len(v.classes)} classes -> {v.path}")
    if stats:
        from geoseg.run.class_stats import class_stats

        click.echo(class_stats(classmap).table())


def _remove_new(outputs, existed) -> None:
    """Remove the class-map files this command created (those that were not there before)."""
    from geoseg.io.files import remove_ours

    for path in outputs:
        if path not in existed:
            remove_ours(path)


@contextlib.contextmanager
def _cluster(cfg):
    """A client for --workers/--scheduler (the in-process default otherwise); prints the link."""
    from geoseg.run.scheduling import dashboard_link, dask_client

    with dask_client(cfg.workers, cfg.scheduler, dashboard=cfg.dashboard) as client:
        link = dashboard_link(client)
        if link and (cfg.dashboard or cfg.scheduler):
            click.echo(f"Dask dashboard: {link}", err=True)
        yield client


def _batch(
    paths,
    from_list,
    output_dir,
    name_pattern,
    model,
    cfg,
    overwrite,
    progress,
    quiet,
    resume,
    stats,
    extra_inputs,
):
    """Check the whole batch, make --output-dir if needed, run it, summarise (exit 1 on failure)."""
    from geoseg.io.files import make_dirs, remove_created
    from geoseg.io.raster import raster_files
    from geoseg.run.batch import check_batch_outputs, expand_inputs, plan_outputs

    if output_dir is None:
        raise click.UsageError("--from-list needs --output-dir DIR")
    inputs = expand_inputs(paths, from_list)
    items = plan_outputs(inputs, output_dir, name_pattern)
    read = [f for path in inputs for f in raster_files(path)]
    check_batch_outputs(items, [*read, *extra_inputs, model])
    created = make_dirs(output_dir)
    try:
        run = (inputs, extra_inputs, model, cfg, overwrite, progress, quiet, resume, stats)
        items = _run_batch(items, *run)
    finally:
        remove_created(created)  # when nothing was written into it
    failed = [it for it in items if it.error]
    click.echo(f"{len(items) - len(failed)} of {len(items)} rasters done, {len(failed)} failed")
    if failed:
        raise SystemExit(1)


def _run_batch(items, inputs, extra_inputs, model, cfg, overwrite, progress, quiet, resume, stats):
    """Predict a checked batch on one cluster, ``cfg.rasters_in_flight`` rasters at once.

    Rasters side by side share the workers, so one raster's start (open, plan, model load) and
    end (last tasks, final write) no longer leave them idle; each is reported as it ends.
    """
    import threading

    from geoseg.io.writers import is_geoseg_output
    from geoseg.run.batch import run_batch
    from geoseg.run.pipeline import predict_file
    from geoseg.run.resume import partial_dir

    in_flight = min(cfg.rasters_in_flight, len(items))
    show = _batch_bars(progress and not quiet, in_flight)
    stop = threading.Event()  # set by run_batch when the batch stops early (Ctrl-C, a crash)
    with _cluster(cfg) as client:

        def run_one(item):
            if resume and is_geoseg_output(item.output):
                return None  # finished before the job was killed (outputs appear atomically)
            bar, report = _raster_progress(item.input, show, in_flight, stop)
            partial = (partial_dir(item.output) / "progress.json").exists()
            try:
                return predict_file(
                    item.input,
                    item.output,
                    model,
                    cfg,
                    overwrite=overwrite,
                    progress=report,
                    client=client,
                    resume=resume and partial,
                    other_inputs=[*inputs, *extra_inputs],
                )
            finally:
                bar.close()  # a raster that failed midway frees its bar's line too

        def done(item):
            if item.error is not None:
                line = f"FAILED: {item.error}"
            elif item.summary is None:
                line = f"already done ({item.output})"
            else:
                line = item.summary.line()
            lines = [f"{item.input}: {line}"]
            if stats and item.error is None:
                from geoseg.run.class_stats import class_stats

                lines.append(class_stats(item.output).table())
            _echo_lines(lines, around_bars=show and in_flight > 1)

        return run_batch(items, run_one, done, in_flight, stop)


def _batch_bars(enabled: bool, in_flight: int) -> bool:
    """Whether the rasters of a batch show progress bars.

    One raster at a time shows its bar as a single run does. Rasters side by side each get a
    line of their own (tqdm gives a new bar the first free line below the others), drawn with
    cursor movements that only a terminal understands: a log file would keep them as escape
    codes and broken lines, so off a terminal the bars are off and each raster's line, printed
    as it ends, is the batch's progress.
    """
    import sys

    return enabled and (in_flight == 1 or sys.stderr.isatty())


def _raster_progress(label, show, in_flight, stop):
    """A batch raster's bar, and its progress callback, which also stops it with the batch.

    Only the main thread receives Ctrl-C; a raster on a ``geoseg-raster`` thread learns of it
    from ``stop`` at its next progress report and raises ``BatchStopped`` (a
    ``KeyboardInterrupt``), unwinding as an interrupted single run: temporaries removed, the
    partial GeoTIFF run kept for ``--resume``.
    """
    from geoseg.commands.progress import ProgressBar
    from geoseg.run.batch import BatchStopped

    # beside other rasters a finished bar is cleared (its line serves the next raster); the
    # raster's summary line says it ended
    bar = ProgressBar(label, enabled=show, leave=in_flight == 1)

    def report(done: int, total: int) -> None:
        if stop.is_set():
            raise BatchStopped
        bar(done, total)

    return bar, report


def _echo_lines(lines, around_bars: bool) -> None:
    """Print a raster's report lines; beside running bars, clear them first, redraw after.

    stdout and the bars' stderr share the terminal: a line printed under a bar's cursor would
    land in the middle of the bars. tqdm's lock also keeps bar redraws out meanwhile.
    """
    if not around_bars:
        for line in lines:
            click.echo(line)
        return
    import sys

    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stdout):
        # a bar cleared below the first line leaves the cursor at the end of a blank line
        sys.stderr.write("\r")
        sys.stderr.flush()
        for line in lines:
            click.echo(line)
