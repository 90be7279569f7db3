"""Batch prediction over many rasters on one Dask cluster.

Each raster runs through :func:`geoseg.run.pipeline.predict_file` exactly as a single-raster run
(same plan, same batches, so the same class map) on a shared client, a few side by side
(``rasters_in_flight``): while one raster is opened, its model loaded or its last blocks
written, the others keep the workers busy. A raster that fails (corrupt, wrong bands) is
reported and the others still run.
"""

from __future__ import annotations

import glob
import os
import string
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import REPORTED, ConfigError, InputError
from geoseg.io.files import refuse_inputs


@dataclass
class BatchItem:
    """One raster of a batch and what became of it."""

    input: str
    output: str
    summary: Any = None
    error: str | None = None


def expand_inputs(patterns: Iterable[str], from_list: str | os.PathLike | None = None) -> list[str]:
    """Paths, globs and the lines of a list file, in order, without duplicates.

    A GDAL URL is taken as it is (its ``?`` and ``*`` are no glob: GDAL resolves it), and a
    STAC item or item collection becomes one input per item (``FILE#ITEM_ID``).
    """
    from geoseg.io import stac
    from geoseg.io.raster import is_gdal_url

    items = list(patterns)
    if from_list:
        path = Path(from_list)
        items += read_list(path)
    out: list[str] = []
    for item in items:
        if stac.is_stac_path(item):
            hits = stac.item_inputs(item)
        elif glob.has_magic(item) and not is_gdal_url(item):
            hits = sorted(glob.glob(item))
        else:
            hits = [item]
        if not hits:
            raise InputError(f"{item!r} matches no file; check the pattern")
        out += [h for h in hits if h not in out]
    if not out:
        raise ConfigError("no input rasters given; pass paths, globs or --from-list FILE")
    return out


LIST_LIMIT = 2**24  # bytes of a --from-list file


def read_list(path: Path) -> list[str]:
    """The paths listed in a ``--from-list`` file: UTF-8 text, one per line, ``#`` comments."""
    if not path.is_file():
        raise ConfigError(
            f"from_list {path} is not a file; give a text file of paths", option="from_list"
        )
    if path.stat().st_size > LIST_LIMIT:
        raise ConfigError(f"--from-list {path} is over {LIST_LIMIT >> 20} MiB; split the list")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"--from-list {path} is not UTF-8 text; give a text file with one path per line"
        ) from None
    if "\0" in text:
        raise ConfigError(f"--from-list {path} holds NUL bytes; give one path per line")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0] != "#"]


def output_name(input_path: str, pattern: str) -> str:
    """Format ``--name`` for one input (``{stem}``, ``{name}``, ``{parent}``) into a file name.

    The result must be a plain name: a separator or ``..`` would write outside --output-dir.
    A STAC item's ``{stem}`` and ``{name}`` are its id; a URL's query string is no part of it.
    """
    from geoseg.io import stac
    from geoseg.io.raster import is_gdal_url

    text = input_path
    if is_gdal_url(input_path):
        text = input_path.partition("?")[0]
        if text.lower().startswith(("zip", "tar", "gzip")):  # zip://ARCHIVE!MEMBER
            text = text.rpartition("!")[2]
    p = Path(text.rstrip("/"))
    stem = p.name[: -len(".zarr")] if p.name.endswith(".zarr") else p.stem
    file_name, parent = p.name, p.parent.name
    if stac.is_stac_path(input_path):
        file, item_id = stac.split_item(input_path)
        stem = file_name = item_id or Path(file).stem
        parent = Path(file).parent.name
    fields = "use {stem}, {name} or {parent}, e.g. '{stem}_classes.tif'"
    opt = "name_pattern"  # predict's --name
    try:
        for _, field, spec, conversion in string.Formatter().parse(pattern):
            if field is not None and (spec or conversion):  # '{stem:>2000000000}' fills RAM
                raise ValueError(f"{{{field}}} takes no format spec or conversion")
        name = pattern.format(stem=stem, name=file_name, parent=parent)
    except (KeyError, IndexError, AttributeError) as exc:
        raise ConfigError(
            f"pattern {pattern!r} uses an unknown field ({exc}); {fields}", option=opt
        ) from None
    except ValueError as exc:
        raise ConfigError(
            f"pattern {pattern!r} is not valid ({exc}); {fields}", option=opt
        ) from None
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ConfigError(
            f"pattern {pattern!r} gives {name!r} for {input_path}, which is not a plain file "
            "name inside --output-dir; drop separators and '..' from it",
            option=opt,
        )
    return name


def plan_outputs(inputs: list[str], output_dir: str | os.PathLike, pattern: str) -> list[BatchItem]:
    """Pair each input with its output path; two inputs may not share an output.

    A missing ``output_dir`` is fine: the command creates it once the batch is checked.
    """
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output-dir {out_dir} is a file; give a folder (it is created)")
    items = [BatchItem(i, str(out_dir / output_name(i, pattern))) for i in inputs]
    seen: dict[str, str] = {}
    for it in items:
        if it.output in seen:
            raise ConfigError(
                f"{it.input} and {seen[it.output]} would both write {it.output}; make --name "
                "unique, e.g. --name '{parent}_{stem}_classes.tif'"
            )
        seen[it.output] = it.input
    return items


def check_batch_outputs(items: list[BatchItem], inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse the whole batch, before any work, when an output would write any input.

    Every file each raster's output writes (class map, sidecars, probabilities, its partial
    folder) is checked against every input of the batch (the rasters, the model, config and
    list files), and its format too; whether it exists is checked per raster later.
    """
    from geoseg.io.writers import touched_paths
    from geoseg.run.resume import partial_dir

    inputs = list(inputs)
    written: dict[Path, str] = {}
    for it in items:
        for path in [*touched_paths(it.output), partial_dir(it.output)]:
            refuse_inputs(path, inputs, f"the output of {it.input}")
            other = written.setdefault(path.resolve(), it.input)
            if other != it.input:
                raise ConfigError(
                    f"the outputs of {other} and {it.input} would both write {path}; make "
                    "--name unique, e.g. --name '{stem}_classes.tif'"
                )


class BatchStopped(KeyboardInterrupt):
    """Raised in a raster still running when its batch stops (Ctrl-C, a crash of another).

    Only the main thread receives signals, so a raster on a ``geoseg-raster`` thread is told
    to stop through :func:`run_batch`'s ``stop`` event and raises this where it checks it. A
    ``KeyboardInterrupt``, it unwinds that raster as Ctrl-C unwinds a single run: writers
    remove their temporaries, a partial GeoTIFF run keeps what ``--resume`` needs.
    """


def run_batch(
    items: list[BatchItem],
    run_one: Callable[[BatchItem], Any],
    on_done: Callable[[BatchItem], None] | None = None,
    in_flight: int = 1,
    stop: threading.Event | None = None,
) -> list[BatchItem]:
    """Run every item, up to ``in_flight`` at once; a geoseg error in one is recorded.

    Rasters side by side keep a cluster busy where one raster alone leaves it idle (opening
    the input, loading the model, the last tasks and the final write of each raster).

    Parameters
    ----------
    items : list of BatchItem
        The batch, in order; each gets its ``summary`` or its ``error``.
    run_one : callable
        ``run_one(item) -> summary``. A geoseg error (``REPORTED``) it raises is recorded on
        the item and the batch goes on: one corrupt raster does not cost the others.
    on_done : callable, optional
        Called with each item as it ends (in the order they end), one call at a time (a
        lock), so the lines it prints never interleave.
    in_flight : int
        Items run at once. 1 runs them one after another in the caller's thread, as before
        (Ctrl-C then interrupts the running raster at once); more use a thread pool.
    stop : threading.Event, optional
        Set when a batch on the pool stops early; ``run_one`` should check it now and then
        and raise :class:`BatchStopped` (a thread cannot be interrupted from outside).

    Returns
    -------
    list of BatchItem
        ``items``, in their input order whatever order they ended in.

    Raises
    ------
    BaseException
        Anything else an item raises (a bug, ``KeyboardInterrupt``), or Ctrl-C in the caller:
        items not started are cancelled, running ones are stopped (``stop``) and waited for,
        then it propagates, so no raster is left writing behind the caller's back.
    """
    if in_flight < 1:
        raise ValueError(f"in_flight {in_flight} must be at least 1")
    if in_flight == 1 or len(items) < 2:
        for item in items:
            _run_item(item, run_one)
            if on_done is not None:
                on_done(item)
        return items
    _run_pool(items, run_one, on_done, min(in_flight, len(items)), stop or threading.Event())
    return items


def _run_item(item: BatchItem, run_one: Callable[[BatchItem], Any]) -> None:
    """``item.summary = run_one(item)``, or the geoseg error's message in ``item.error``."""
    try:
        item.summary = run_one(item)
    except REPORTED as exc:
        item.error = str(exc)


def _run_pool(
    items: list[BatchItem],
    run_one: Callable[[BatchItem], Any],
    on_done: Callable[[BatchItem], None] | None,
    workers: int,
    stop: threading.Event,
) -> None:
    """:func:`run_batch` on ``workers`` threads; the first other exception stops the rest.

    The caller's thread only waits, so Ctrl-C reaches it there (signals go to the main
    thread): then, as when an item raises, pending items are cancelled, ``stop`` is set for
    the running ones, and the pool is shut down (waiting for them) before the exception goes on.
    """
    lock = threading.Lock()

    def task(item: BatchItem) -> None:
        if stop.is_set():
            return  # the batch is stopping: a pending item that a thread took anyway
        try:
            _run_item(item, run_one)
            if on_done is not None:
                with lock:
                    on_done(item)
        except BaseException:
            stop.set()  # here already: this thread's next item must not start
            raise

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoseg-raster")
    stopped: BatchStopped | None = None
    try:
        futures = [pool.submit(task, item) for item in items]
        for future in as_completed(futures):
            try:
                future.result()  # re-raises what escaped the item (not a geoseg error)
            except BatchStopped as exc:  # the stop's effect; its cause may complete later
                stopped = stopped or exc
        if stopped is not None:
            raise stopped
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
