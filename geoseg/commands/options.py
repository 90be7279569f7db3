"""Options shared by several commands, defined once (as in rasterio's ``rio/options.py``)."""

from __future__ import annotations

import logging
from typing import Any, get_args

import click

from geoseg.core.blend import BlendMode
from geoseg.core.confidence import Uncertainty
from geoseg.model.engine import TTA, Device, Precision


class Command(click.Command):
    """A click command that reports a refused option value as click reports its own.

    The library raises errors about values (``GeosegError.option`` names the option); when
    that value came from the command line, the error becomes a :class:`click.BadParameter`
    naming the flag, so every bad value reads and exits (2) the same way. A value from a
    ``--config`` file keeps the library's message, which names the option as the file does.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, mapping a refused option value to its flag."""
        from geoseg.errors import GeosegError

        try:
            return super().invoke(ctx)
        except GeosegError as exc:
            param = _given_param(ctx, exc.option)
            if param is None:
                raise
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _given_param(ctx: click.Context, option: str | None) -> click.Parameter | None:
    """The parameter called ``option`` when the user gave it on the command line."""
    from click.core import ParameterSource

    if option is None:
        return None
    for param in ctx.command.params:
        if param.name == option:
            given = ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
            return param if given else None
    return None


class Group(click.Group):
    """A click group whose subcommands are :class:`Command` s."""

    command_class = Command


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


def choice_opt(flag: str, choices: Any, default_word: str, help: str) -> Any:
    """An option whose choices are a ``Literal`` of the configs (one spelling of each)."""
    return click.option(
        flag,
        type=click.Choice(get_args(choices)),
        default=None,
        help=f"{help} [default: {default_word}].",
    )


device_opt = choice_opt("--device", Device, "auto = cuda if available", "Where the model runs")
precision_opt = choice_opt(
    "--precision", Precision, "auto", "Compute precision; half precision only on GPU"
)
blend_opt = choice_opt("--blend", BlendMode, "gaussian", "Blend weights of overlapping windows")
tta_opt = choice_opt("--tta", TTA, "none", "Test-time augmentation")
uncertainty_opt = choice_opt(
    "--uncertainty",
    Uncertainty,
    "the winning probability",
    "Store this measure in the confidence file instead (implies --confidence)",
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


def report_opt(flag: str, what: str) -> Any:
    """``--json FILE`` / ``--csv FILE``: the same meaning in every command (``-``: stdout)."""
    return click.option(
        flag,
        f"{flag.lstrip('-')}_out",
        type=click.Path(allow_dash=True),  # geoseg checks the kind (and inputs) itself
        default=None,
        metavar="FILE",
        help=f"Write {what} to FILE (- for stdout).",
    )
