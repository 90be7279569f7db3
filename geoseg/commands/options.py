"""Options shared by several commands, defined once (as in rasterio's ``rio/options.py``)."""

from __future__ import annotations

import logging
from typing import get_args

import click

from geoseg.core.blend import BlendMode
from geoseg.core.confidence import Uncertainty
from geoseg.model.engine import TTA, Device, Precision

overwrite_opt = click.option(
    "--overwrite", is_flag=True, default=False, help="Replace an existing output."
)


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """``-v`` on the group (``geoseg -v predict``) or the command: both count."""
    root = ctx.find_root()
    if ctx is root:
        root.meta["geoseg.verbose"] = value
    else:
        value += root.meta.get("geoseg.verbose", 0)
    level = max(logging.DEBUG, logging.WARNING - 10 * value)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    logging.getLogger("geoseg").setLevel(level)
    return value


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """``-q`` on the group or the command: warnings off, progress bars off."""
    root = ctx.find_root()
    if ctx is root:
        root.meta["geoseg.quiet"] = value
    value = bool(value or root.meta.get("geoseg.quiet"))
    if value:
        logging.getLogger("geoseg").setLevel(logging.ERROR)
    return value


verbose_opt = click.option(
    "-v",
    "--verbose",
    count=True,
    callback=_set_verbosity,
    expose_value=False,
    is_eager=True,
    help="More log output (repeat for debug).",
)
quiet_opt = click.option(
    "-q",
    "--quiet",
    is_flag=True,
    default=False,
    callback=_set_quiet,
    help="Only errors and the final summary (no warnings, no progress bar).",
)
progress_opt = click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
device_opt = click.option(
    "--device",
    type=click.Choice(get_args(Device)),
    default=None,
    help="Where the model runs [default: auto = cuda if available].",
)
precision_opt = click.option(
    "--precision",
    type=click.Choice(get_args(Precision)),
    default=None,
    help="Compute precision; half precision only on GPU [default: auto].",
)
dashboard_opt = click.option(
    "--dashboard",
    is_flag=False,
    flag_value="127.0.0.1:8787",
    default=None,
    metavar="[HOST:PORT]",
    help=(
        "Serve the Dask dashboard of the cluster geoseg starts (off by default; alone: "
        "127.0.0.1:8787). It has no authentication: another host than loopback only if named."
    ),
)


def parse_key_values(values: tuple[str, ...], option: str, example: str) -> dict[str, object]:
    """Parse repeated ``OPTION KEY=VALUE`` into a dict; each VALUE is YAML (bounded loader).

    Parameters
    ----------
    values : tuple of str
        The option's values as given.
    option : str
        The option's name for messages (``"--set"``).
    example : str
        A valid ``KEY=VALUE`` shown in messages.
    """
    from geoseg.config import parse_yaml
    from geoseg.errors import ConfigError

    out: dict[str, object] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE; e.g. {option} {example}", param_hint=option
            )
        try:
            out[key.strip()] = parse_yaml(raw, f"{option} {item!r}: the value")
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint=option) from None
    return out
blend_opt = click.option(
    "--blend",
    type=click.Choice(get_args(BlendMode)),
    default=None,
    help="Blend weights of overlapping windows [default: gaussian].",
)
tta_opt = click.option(
    "--tta",
    type=click.Choice(get_args(TTA)),
    default=None,
    help="Test-time augmentation [default: none].",
)
uncertainty_opt = click.option(
    "--uncertainty",
    type=click.Choice(get_args(Uncertainty)),
    default=None,
    help="Store this measure in the confidence file instead (implies --confidence).",
)
