"""Durable progress of a prediction: a partial directory beside the output.

``.<output name>.geoseg-partial/`` holds the temporary output files, ``progress.json`` (what
is being computed and how many rows are final on disk, rewritten atomically after each block
row is flushed) and ``lock`` (pid and host of the job writing it). A killed job leaves the
directory behind; ``--resume`` checks that the input, model and options are the same and
restarts at the first unfinished block row, which :meth:`geoseg.predict.Plan.resume_point`
reproduces bit for bit. A finished job removes the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, OutputError


def partial_dir(output: str | os.PathLike) -> Path:
    """The partial directory of ``output``."""
    out = Path(output)
    return out.with_name(f".{out.name}.geoseg-partial")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Lock:
    """An exclusive claim on an output (a file created with ``O_EXCL``)."""

    path: Path

    @classmethod
    def acquire(cls, directory: Path) -> Lock:
        """Take the lock; a stale lock of a dead process on this host is taken over."""
        directory.mkdir(exist_ok=True)
        path = directory / "lock"
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_json(path) or {}
                same_host = holder.get("host") == me["host"]
                if same_host and not _pid_alive(int(holder.get("pid", -1))):
                    path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise OutputError(
                    f"{directory.name[1 : -len('.geoseg-partial')]} is being written by another "
                    f"job (pid {holder.get('pid')} on {holder.get('host')}); wait for it, or "
                    f"remove {path} if that job is gone"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return cls(path)
        raise OutputError(f"cannot take the lock {path}; remove it if no job is running")

    def release(self) -> None:
        """Give the lock up."""
        self.path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_progress(directory: Path, identity: dict[str, Any], rows_done: int) -> None:
    """Record that rows ``[0, rows_done)`` are final on disk (atomic rename)."""
    tmp = directory / "progress.json.tmp"
    tmp.write_text(json.dumps({"identity": identity, "rows_done": rows_done}, indent=1))
    os.replace(tmp, directory / "progress.json")


def resume_row(directory: Path, identity: dict[str, Any], output: str) -> int:
    """The row to restart from; refuse when the recorded job differs."""
    doc = _read_json(directory / "progress.json")
    if doc is None:
        raise ConfigError(
            f"nothing to resume for {output}: no partial run was found; run without --resume"
        )
    recorded = doc.get("identity", {})
    diff = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
    if diff:
        raise ConfigError(
            f"--resume: the partial run of {output} used different {', '.join(diff)}; run "
            "again with the same input, model and options, or without --resume to start over"
        )
    return int(doc.get("rows_done", 0))


def discard(directory: Path) -> None:
    """Remove a partial directory (after success, or to start over)."""
    shutil.rmtree(directory, ignore_errors=True)


@dataclass
class PartialRun:
    """One job's claim on an output's partial directory.

    Attributes
    ----------
    directory : Path
        The partial directory (temporary output files live here).
    identity : dict
        What is being computed (input, model, options), recorded with the progress.
    start_row : int
        First raster row to compute (0 unless resuming).
    """

    directory: Path
    identity: dict[str, Any]
    start_row: int = 0

    def record(self, rows_done: int) -> None:
        """Record that rows ``[0, rows_done)`` are final on disk."""
        write_progress(self.directory, self.identity, rows_done)


@contextlib.contextmanager
def partial_run(
    output: str | os.PathLike, identity: dict[str, Any], resume: bool, height: int
) -> Iterator[PartialRun]:
    """Lock ``output``'s partial directory for one job and clean it up afterwards.

    With ``resume`` the job starts at the recorded row (refused when ``identity`` differs);
    otherwise leftovers of an earlier job are removed. On success the directory is removed; on
    failure it is kept only if it holds progress to resume from.
    """
    directory = partial_dir(output)
    lock = Lock.acquire(directory)
    done = False
    try:
        start = 0
        if resume:
            start = resume_row(directory, identity, str(output))
            if start >= height:
                start = 0  # killed while committing: redo the (cheap) last steps
        else:
            for leftover in directory.iterdir():
                if leftover.name != "lock":
                    leftover.unlink()
        yield PartialRun(directory, identity, start)
        done = True
    finally:
        lock.release()
        if done or not (directory / "progress.json").exists():
            discard(directory)
