"""Batch prediction over many rasters on one Dask cluster.

Each raster runs through :func:`geoseg.pipeline.predict_file` exactly as a single-raster run
(same plan, same batches, so the same class map), one after another on a shared client: every
raster's windows are spread over all workers. A raster that fails (corrupt, wrong bands) is
reported and the others still run.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, GeosegError, InputError


@dataclass
class BatchItem:
    """One raster of a batch and what became of it."""

    input: str
    output: str
    summary: Any = None
    error: str | None = None


def expand_inputs(patterns: Iterable[str], from_list: str | os.PathLike | None = None) -> list[str]:
    """Paths, globs and the lines of a list file, in order, without duplicates."""
    items = list(patterns)
    if from_list:
        path = Path(from_list)
        if not path.is_file():
            raise ConfigError(f"--from-list {path} does not exist; give a text file of paths")
        items += [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    out: list[str] = []
    for item in items:
        hits = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not hits:
            raise InputError(f"{item!r} matches no file; check the pattern")
        out += [h for h in hits if h not in out]
    if not out:
        raise ConfigError("no input rasters given; pass paths, globs or --from-list FILE")
    return out


def output_name(input_path: str, pattern: str) -> str:
    """Format ``--name`` for one input (``{stem}``, ``{name}``, ``{parent}``)."""
    p = Path(input_path.rstrip("/"))
    stem = p.name[: -len(".zarr")] if p.name.endswith(".zarr") else p.stem
    try:
        return pattern.format(stem=stem, name=p.name, parent=p.parent.name)
    except (KeyError, IndexError) as exc:
        raise ConfigError(
            f"--name {pattern!r} uses an unknown field {exc}; use {{stem}}, {{name}} or {{parent}}"
        ) from None


def plan_outputs(inputs: list[str], output_dir: str | os.PathLike, pattern: str) -> list[BatchItem]:
    """Pair each input with its output path; two inputs may not share an output."""
    out_dir = Path(output_dir)
    if not out_dir.is_dir():
        raise ConfigError(f"--output-dir {out_dir} does not exist; create it first")
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


def run_batch(
    items: list[BatchItem],
    run_one: Callable[[BatchItem], Any],
    on_done: Callable[[BatchItem], None] | None = None,
) -> list[BatchItem]:
    """Run every item; a geoseg error in one is recorded and the batch goes on."""
    for item in items:
        try:
            item.summary = run_one(item)
        except GeosegError as exc:
            item.error = str(exc)
        if on_done is not None:
            on_done(item)
    return items
