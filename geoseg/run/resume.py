"""Durable progress of a prediction: a partial folder beside the output.

``.<output name>.geoseg-partial/`` holds the temporary output files, ``progress.json`` (what
is being computed, how many rows are final on disk, and a digest of each finished block row's
bytes; rewritten atomically after each block row is flushed and fsync'd) and ``lock`` (pid and
host of the job writing it). A killed job leaves the folder behind; ``--resume`` checks that
the input, model and options are the same, that the recorded progress is well-formed and that
every recorded block row still reads back with its digest, and restarts at the first
unfinished block row, which :meth:`geoseg.core.plan.Plan.resume_point` reproduces bit for bit.
Everything read back from the folder is validated before it is trusted; a finished job removes
the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, OutputError, OutputExistsError
from geoseg.io.files import atomic_write, remove_ours
from geoseg.io.writers import START_OVER

PID_MAX = 2**31 - 1  # pid_t
# what a partial folder may hold: geoseg's own files (and their PAM sidecars, temporaries)
PARTIAL_FILES = ("classes.tif", "probabilities.tif", "confidence.tif", "progress.json", "lock")


def partial_dir(output: str | os.PathLike) -> Path:
    """The partial folder of ``output``."""
    out = Path(output)
    return out.with_name(f".{out.name}.geoseg-partial")


def _output_name(directory: Path) -> str:
    return directory.name[1 : -len(".geoseg-partial")]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_partial_folder(directory: Path) -> None:
    """Refuse a partial folder that is not a plain folder of this user (a file, a link)."""
    try:
        st = directory.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise OutputError(
            f"{directory} is {kind}, where geoseg keeps the partial run of "
            f"{_output_name(directory)}; remove it or choose another output path"
        )
    if st.st_uid != os.getuid():
        raise OutputError(
            f"{directory} belongs to another user; remove it or choose another output path"
        )


def _holder(path: Path) -> dict[str, Any]:
    """The validated content of a lock file: ``{"pid": int, "host": str}``."""
    doc = _read_json(path)
    pid = doc.get("pid") if isinstance(doc, dict) else None
    host = doc.get("host") if isinstance(doc, dict) else None
    if type(pid) is not int or not 0 < pid <= PID_MAX or not isinstance(host, str):
        raise OutputError(
            f"lock file {path} is malformed (expected a pid and a host); if no geoseg job is "
            f"writing {_output_name(path.parent)}, remove {path}"
        )
    return {"pid": pid, "host": host}


@contextlib.contextmanager
def _serialized(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (taken by every job that locks it)."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


@dataclass
class Lock:
    """An exclusive claim on an output (a file created with ``O_EXCL``)."""

    path: Path

    @classmethod
    def acquire(cls, directory: Path) -> Lock:
        """Take the lock; a stale lock of a dead process on this host is taken over."""
        for _ in range(5):
            check_partial_folder(directory)
            directory.mkdir(exist_ok=True)
            try:
                with _serialized(directory):  # two jobs taking over one stale lock: one wins
                    return cls._take(directory)
            except FileNotFoundError:
                continue  # a finishing job removed the folder meanwhile: make it again
        raise OutputError(f"cannot take the lock in {directory}; try again")

    @classmethod
    def _take(cls, directory: Path) -> Lock:
        path = directory / "lock"
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o666)
            except FileExistsError:
                holder = _holder(path)
                if holder["host"] == me["host"] and not _pid_alive(holder["pid"]):
                    path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise OutputError(
                    f"{_output_name(directory)} is being written by another job (pid "
                    f"{holder['pid']} on {holder['host']}); wait for it, or remove {path} if "
                    "that job is gone"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return cls(path)
        raise OutputError(f"cannot take the lock {path}; remove it if no job is running")

    def release(self) -> None:
        """Give the lock up."""
        self.path.unlink(missing_ok=True)


def _read_json(path: Path) -> Any:
    try:
        if not stat.S_ISREG(path.lstat().st_mode) or path.lstat().st_size > 2**24:
            return None
        return json.loads(path.read_bytes().decode())
    except (OSError, ValueError, RecursionError):
        return None


@dataclass(frozen=True)
class Progress:
    """Validated resume state: rows ``[0, rows_done)`` are final, one digest per block row."""

    rows_done: int
    digests: tuple[str, ...]


def block_rows(rows_done: int, block_size: int, height: int) -> list[tuple[int, int]]:
    """The block rows ``(row0, row1)`` that make up rows ``[0, rows_done)``."""
    return [(r, min(r + block_size, height)) for r in range(0, rows_done, block_size)]


def read_progress(
    directory: Path, identity: dict[str, Any], output: str, height: int, block_size: int
) -> Progress:
    """The recorded progress, refused unless it is well-formed and of the same job."""
    path = directory / "progress.json"
    if not path.exists() and not path.is_symlink():
        raise ConfigError(
            f"nothing to resume for {output}: no partial run was found; run without --resume"
        )
    doc = _read_json(path)

    def bad(what: str) -> ConfigError:
        return ConfigError(f"--resume: {path} is not valid ({what}); {START_OVER}")

    if not isinstance(doc, dict):
        raise bad("not a JSON object written by geoseg")
    recorded = doc.get("identity")
    if not isinstance(recorded, dict):
        raise bad("no job identity")
    diff = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
    if diff:
        raise ConfigError(
            f"--resume: the partial run of {output} used different {', '.join(diff)}; run "
            f"again with the same input, model and options, or {START_OVER}"
        )
    rows, digests = doc.get("rows_done"), doc.get("digests")
    if type(rows) is not int or not 0 <= rows <= height:
        raise bad(f"rows_done {rows!r} is not a row count in 0..{height}")
    if rows % block_size and rows != height:
        raise bad(f"rows_done {rows} is not on a block boundary of {block_size}")
    expected = len(block_rows(rows, block_size, height))
    if not isinstance(digests, list) or len(digests) != expected:
        raise bad(f"expected {expected} block-row digests for {rows} rows")
    if not all(isinstance(d, str) and len(d) == 64 for d in digests):
        raise bad("a block-row digest is not a SHA-256")
    return Progress(rows, tuple(digests))


def _ours(entry: Path) -> bool:
    """A file geoseg writes in a partial folder, or a temporary of one (``.NAME.XXXX.tmp``)."""
    name = entry.name
    bases = (*PARTIAL_FILES, *(f"{f}.aux.xml" for f in PARTIAL_FILES))
    known = name in bases or any(name.startswith(f".{b}.") for b in bases)
    return known and not (entry.is_dir() and not entry.is_symlink())


def refuse_unasked_restart(directory: Path, output: str, overwrite: bool) -> None:
    """Refuse to throw away an earlier job's resumable progress unless ``--overwrite``."""
    if not overwrite and (directory / "progress.json").exists():
        raise OutputExistsError(
            f"{output} has an unfinished earlier run in {directory}; continue it with "
            "--resume, or pass --overwrite to start over"
        )


def clear_leftovers(directory: Path) -> None:
    """Remove what an earlier job left in the partial folder; refuse files geoseg did not write."""
    foreign = sorted(e.name for e in directory.iterdir() if not _ours(e))
    if foreign:
        raise OutputError(
            f"{directory} holds {foreign[0]}, which geoseg did not write; remove it or choose "
            "another output path"
        )
    for entry in directory.iterdir():
        if entry.name != "lock":
            remove_ours(entry)


def discard(directory: Path) -> None:
    """Remove a partial folder: geoseg's own files in it, then the folder if nothing is left."""
    for entry in directory.iterdir():
        if _ours(entry):
            remove_ours(entry)
    with contextlib.suppress(OSError):
        directory.rmdir()


def check_partial_files(files: list[Path]) -> None:
    """Refuse to resume from partial files that are not plain files (a planted link)."""
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise ConfigError(f"--resume: {path} is missing or not a regular file; {START_OVER}")


@dataclass
class PartialRun:
    """One job's claim on an output's partial folder.

    Attributes
    ----------
    directory : Path
        The partial folder (temporary output files live here).
    identity : dict
        What is being computed (input, model, options), recorded with the progress.
    height, block_size : int
        Raster height and output block side (block rows are the unit of progress).
    start_row : int
        First raster row to compute (0 unless resuming).
    digests : list of str
        Digest of each durable block row, in order.
    """

    directory: Path
    identity: dict[str, Any]
    height: int
    block_size: int
    start_row: int = 0
    digests: list[str] = field(default_factory=list)

    def record(self, rows_done: int, digest: str) -> None:
        """Record that rows ``[0, rows_done)`` are final on disk; ``digest`` is the last row's."""
        self.digests.append(digest)
        doc = {"identity": self.identity, "rows_done": rows_done, "digests": self.digests}
        atomic_write(self.directory / "progress.json", json.dumps(doc, indent=1), what="progress")

    def verify(self, digest_rows: Callable[[int, int], str]) -> None:
        """Refuse to resume when a recorded block row does not read back with its digest."""
        spans = block_rows(self.start_row, self.block_size, self.height)
        for (row0, row1), recorded in zip(spans, self.digests, strict=True):
            if digest_rows(row0, row1) != recorded:
                raise ConfigError(
                    f"--resume: rows {row0}..{row1} of the partial output in {self.directory} "
                    f"differ from what was recorded (the partial files were changed); {START_OVER}"
                )


@contextlib.contextmanager
def partial_run(
    output: str | os.PathLike,
    identity: dict[str, Any],
    resume: bool,
    height: int,
    block_size: int,
    overwrite: bool = False,
) -> Iterator[PartialRun]:
    """Lock ``output``'s partial folder for one job and clean it up afterwards.

    With ``resume`` the job starts at the recorded row (refused when ``identity`` differs or
    the state is not valid); otherwise an earlier job's resumable progress is kept unless
    ``overwrite`` (refused), and its leftovers are removed. On success the folder is removed;
    on failure it is kept only if it holds progress to resume from.
    """
    directory = partial_dir(output)
    lock = Lock.acquire(directory)
    done = False
    try:
        run = PartialRun(directory, identity, height, block_size)
        if resume:
            progress = read_progress(directory, identity, str(output), height, block_size)
            run.digests = list(progress.digests)
            run.start_row = progress.rows_done  # == height: only the commit is left to do
        else:
            refuse_unasked_restart(directory, str(output), overwrite)
            clear_leftovers(directory)
        yield run
        done = True
    finally:
        with _serialized(directory) if directory.is_dir() else contextlib.nullcontext():
            # no job takes the lock while the folder is cleared
            if done or not (directory / "progress.json").exists():
                discard(directory)  # the lock with it
            else:
                lock.release()
