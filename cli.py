"""geoseg's command-line interface.

Subcommands live one per module in :mod:`geoseg.commands` and are imported only when invoked,
so ``geoseg --help`` stays instant and never imports torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from geoseg import __version__

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
def cli() -> None:
    """geoseg: semantic segmentation of very large georeferenced rasters."""


def quiet_georeference_warnings() -> None:
    """Silence rasterio's per-open warnings about a missing georeference, process-wide.

    geoseg says it once, in words (``WARNING: ... has no georeference``). A process-wide filter
    is needed because ``warnings.catch_warnings`` is not thread-safe: with files opened on the
    reader and writer threads at once, a local filter can be undone by another thread.
    """
    import warnings

    for message in ("Dataset has no geotransform", "The given matrix is equal to Affine.identity"):
        warnings.filterwarnings("ignore", message=message)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; geoseg errors become one-line messages and a non-zero exit, no traceback."""
    from geoseg.errors import GeosegError
    from geoseg.memory import bound_gdal_cache, tune_malloc

    bound_gdal_cache()
    tune_malloc()
    quiet_georeference_warnings()
    try:
        cli.main(args=argv, prog_name="geoseg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except GeosegError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo(
            "Interrupted; no output was written (a GeoTIFF prediction continues with --resume).",
            err=True,
        )
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
