"""geoseg's command-line interface.

Subcommands live one per module in :mod:`geoseg.commands` and are imported only when invoked,
so ``geoseg --help`` stays instant and never imports torch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import click

from geoseg import __version__
from geoseg.commands.options import quiet_opt, verbose_opt

# name -> "module:function"; each module is imported only when its command runs.
COMMANDS = {
    "predict": "geoseg.commands.predict:predict",
    "tiles": "geoseg.commands.tiles:tiles",
    "model": "geoseg.commands.model:model",
    "evaluate": "geoseg.commands.evaluate:evaluate",
    "train": "geoseg.commands.train:train",
    "finetune": "geoseg.commands.train:finetune",
    "adapt": "geoseg.commands.adapt:adapt",
    "quicklook": "geoseg.commands.quicklook:quicklook",
    "vectorize": "geoseg.commands.vectorize:vectorize",
    "stats": "geoseg.commands.stats:stats",
}

HELP = {
    "predict": "Segment rasters: tiled, blended, streamed, georeferenced output.",
    "tiles": "Show (and export) the window grid predict would use.",
    "model": "Create and inspect checkpoints.",
    "evaluate": "Streaming mIoU, per-class IoU and confusion matrix.",
    "train": "Train a model on labelled chips.",
    "finetune": "Fine-tune a checkpoint on labelled chips of a new region.",
    "adapt": "Adapt a checkpoint to a new region without labels.",
    "quicklook": "Render an image beside its colour class map as a PNG.",
    "vectorize": "Turn a class map into polygons (GeoPackage, FlatGeobuf, GeoJSON, Parquet).",
    "stats": "Per-class pixel counts, areas and shares of a class map (zonal with --aoi).",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return the available subcommand names."""
        return sorted(n for n in COMMANDS if _available(n))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """Import and return subcommand ``name``."""
        if name not in COMMANDS or not _available(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


def _available(name: str) -> bool:
    module = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@verbose_opt
@quiet_opt
def cli(quiet: bool) -> None:
    """geoseg: semantic segmentation of very large georeferenced rasters."""


class Terminated(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP), raised in the main thread like Ctrl-C.

    Being a ``KeyboardInterrupt``, it unwinds every ``with`` block as Ctrl-C does: writers
    delete their temporaries, partial GeoTIFF runs keep what ``--resume`` needs, clusters stop.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: types.FrameType | None) -> None:
    """Raise ``KeyboardInterrupt`` (SIGINT) or :class:`Terminated` in the main thread."""
    import signal

    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated(signum)


def _unraisable(args: Any, previous: Callable[[Any], None]) -> None:
    """``sys.unraisablehook``: an interrupt that Python swallowed is delivered again.

    The handler's exception is lost where the signal arrives during a garbage-collector
    callback (distributed's GC diagnosis), a weakref callback or a ``__del__``: Python prints
    "Exception ignored" and carries on. The signal is then sent again a moment later.
    """
    import signal

    exc = args.exc_value
    if not isinstance(exc, KeyboardInterrupt) or threading.current_thread() is not (
        threading.main_thread()
    ):
        previous(args)
        return
    signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
    signal.signal(signum, _on_signal)
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while the block runs (main thread).

    SIGINT keeps raising ``KeyboardInterrupt``; either is delivered again where Python would
    swallow it (:func:`_unraisable`). A signal that the parent set to be ignored (``nohup``)
    or handles otherwise stays as it is.
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for name, default in (
        ("SIGINT", signal.default_int_handler),
        ("SIGTERM", signal.SIG_DFL),
        ("SIGHUP", signal.SIG_DFL),
    ):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is default:
            installed[signum] = signal.signal(signum, _on_signal)
    hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_unraisable, previous=hook)
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for signum, previous in installed.items():
            signal.signal(signum, previous)


def interrupted(args: list[str], exc: BaseException | None) -> tuple[str, int]:
    """The one-line message and exit status (128 + signal: 130 for Ctrl-C) of an interrupt."""
    import signal

    while exc is not None and not isinstance(exc, KeyboardInterrupt):
        exc = exc.__cause__ or exc.__context__
    signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
    how = (
        "interrupted"
        if signum == signal.SIGINT
        else f"interrupted by {signal.Signals(signum).name}"
    )
    if args[:1] == ["predict"] and any(a.split("=")[0] == "--output-dir" for a in args):
        return f"Error: {how}; finished rasters are kept: continue with --resume", 128 + signum
    resumed_training = args[:1] in (["train"], ["finetune"], ["adapt"]) and "--resume" in args
    if resumed_training or (args[:1] == ["predict"] and _partial_run_kept(args[1:])):
        return f"Error: {how}; the work done is kept: continue with --resume", 128 + signum
    return f"Error: {how}; no output was written", 128 + signum


def _partial_run_kept(args: list[str]) -> bool:
    """Whether one of ``args`` names an output whose partial run ``--resume`` can continue."""
    from geoseg.run.resume import partial_dir

    for arg in args:
        try:
            if not arg.startswith("-") and (partial_dir(arg) / "progress.json").is_file():
                return True
        except (OSError, ValueError):  # not a path (an empty name, an embedded NUL)
            continue
    return False


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; geoseg errors become one-line messages and a non-zero exit, no traceback.

    Ctrl-C, SIGTERM and SIGHUP stop a command cleanly (temporaries removed, a partial GeoTIFF
    run kept for ``--resume``) with one ``Error: interrupted ...`` line and exit status 128 +
    the signal: 130 (Ctrl-C), 143 (SIGTERM), 129 (SIGHUP).
    """
    from geoseg.errors import REPORTED
    from geoseg.runtime import configure

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with termination_as_interrupt():
            configure()
            cli.main(args=args, prog_name="geoseg", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        message, code = interrupted(args, exc)
        click.echo(message, err=True)
        sys.exit(code)
    except click.UsageError as exc:  # one line, as every geoseg error (no usage block)
        where = exc.ctx.command_path if exc.ctx is not None else "geoseg"
        click.echo(f"Error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except REPORTED as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 1))
    except OSError as exc:  # the system refused (disk full, permissions) where geoseg did not ask
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(
            f"Error: {where}{exc.strerror or exc}; check the path, its permissions and the free "
            "disk space",
            err=True,
        )
        sys.exit(1)
    except MemoryError:
        click.echo(
            "Error: out of memory; use a smaller --tile, --batch-size or --block-size", err=True
        )
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
