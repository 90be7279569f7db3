"""geoseg's exceptions.

Each error inherits from :class:`GeosegError` and the matching built-in, so callers can catch
either. Messages are one line: what was received, what was expected, and how to fix it. The CLI
prints them without a traceback and exits non-zero.
"""

from __future__ import annotations

from tilers.grid import TilingError


class GeosegError(Exception):
    """Base class of every error geoseg raises on purpose.

    ``option`` names the option (a config field or function parameter, e.g. ``"tile"``) whose
    value was refused: the library speaks of values, and the CLI maps the option to its flag
    (``--tile``) when the value came from the command line. A refused value exits with 2,
    wherever it came from (flag, config file), as click's own refusals do.
    """

    exit_code = 1

    def __init__(self, *args: object, option: str | None = None) -> None:
        super().__init__(*args)
        self.option = option
        if option is not None:
            self.exit_code = 2


class InputError(GeosegError, ValueError):
    """An input file or value is unusable (missing, corrupt, wrong shape or dtype)."""


class RasterReadError(InputError):
    """A raster cannot be opened or read."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, or not a geoseg checkpoint."""


class ConfigError(InputError):
    """A configuration file or option value is invalid.

    Exits with 2, as click does for a value it refuses itself, so every bad value gives one
    exit code (1: the files or data could not be used; 2: the command was asked wrongly).
    """

    exit_code = 2


class ClusterError(GeosegError, ConnectionError):
    """The Dask scheduler cannot be reached or does not answer as one."""


class OutputExistsError(GeosegError, FileExistsError):
    """The output exists and ``--overwrite`` was not given."""


class OutputError(GeosegError, OSError):
    """The output cannot be written (missing or unwritable directory)."""


class AlignmentError(InputError):
    """Two rasters that must share a grid do not (CRS, transform or shape differ)."""


class LabelError(InputError):
    """Label values or colours do not fit the class set."""


class DatasetError(InputError):
    """A labelled dataset is empty, incomplete or of an unknown layout."""


# What the CLI and a batch report in one line: geoseg's errors and the tiling maths' (tilers
# imports nothing from geoseg, so its error is its own).
REPORTED = (GeosegError, TilingError)
