"""Where a command's reports go: ``--json FILE`` / ``--csv FILE``, ``-`` meaning stdout.

One convention for every command that reports (evaluate, stats, model info): a report named
``-`` goes to stdout instead of the table, and every other one is written atomically through
:func:`geoseg.io.files.atomic_write` (never over an input, never through a link).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

import click

STDOUT = "-"

PathLike = str | os.PathLike[str]


def check_stdout(outputs: Mapping[str, PathLike | None]) -> None:
    """At most one report may go to stdout."""
    dashed = [opt for opt, path in outputs.items() if path == STDOUT]
    if len(dashed) > 1:
        raise click.UsageError(
            f"{' and '.join(f'{o} -' for o in dashed)} would all write to stdout; give files"
        )


def file_outputs(outputs: Mapping[str, PathLike | None]) -> dict[str, PathLike]:
    """The reports that go to files (the ones to check against the inputs before any work)."""
    return {opt: path for opt, path in outputs.items() if path and path != STDOUT}


def emit(
    table: str,
    renders: Mapping[str, Callable[[], str | bytes]],
    outputs: Mapping[str, PathLike | None],
    overwrite: bool,
    inputs: Iterable[PathLike | None] = (),
) -> None:
    """Print ``table`` (unless a report goes to stdout), then write each requested report."""
    from geoseg.io.files import atomic_write

    if STDOUT not in outputs.values():
        click.echo(table)
    inputs = list(inputs)
    for opt, path in outputs.items():
        if path == STDOUT:
            click.echo(renders[opt](), nl=False)
        elif path:
            atomic_write(path, renders[opt](), overwrite=overwrite, inputs=inputs, what=opt)
