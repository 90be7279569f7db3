"""Safe file output, in one place: the output guard, exclusive temporaries, atomic installs.

Every file or folder a geoseg command writes goes through here, so the same rules hold for
class maps, sidecars, reports, checkpoints and run folders:

- an output is never one of the command's inputs (compared by file identity and resolved path,
  with or without ``--overwrite``);
- an output path that is a symbolic link is refused: geoseg never writes through a link;
- temporaries are created exclusively (``O_EXCL`` via :mod:`tempfile`) beside the target, so a
  planted file or link at a guessable name cannot redirect a write, and are renamed into place
  atomically;
- what geoseg creates gets the modes the user's umask gives (``tempfile`` alone gives 0600);
- a folder is replaced or removed only when its owner recognises it as geoseg's own
  (``is_ours``): ``--overwrite`` never removes a folder of unknown content.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from geoseg.errors import InputError, OutputError, OutputExistsError

PathLike = str | os.PathLike[str]

__all__ = [
    "atomic_write",
    "check_target",
    "content_digest",
    "exclusive_temp",
    "fsync_path",
    "install",
    "is_same_or_inside",
    "make_dirs",
    "remove_created",
    "refuse_inputs",
    "remove_ours",
    "reserve_temp",
    "stamps",
    "temp_dir",
    "umask_mode",
    "unverified",
]


def _plain(path: PathLike) -> Path:
    return Path(os.fspath(path).rstrip("/\\") or os.fspath(path))


def umask_mode(directory: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets under this process's umask."""
    mask = _current_umask()
    return (0o777 if directory else 0o666) & ~mask


def _current_umask() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(mask)
    return mask


def is_same_or_inside(path: PathLike, other: PathLike) -> bool:
    """True when ``path`` is the file ``other``, or lies inside the folder ``other``."""
    a, b = _plain(path), _plain(other)
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    ra, rb = a.resolve(), b.resolve()
    return ra == rb or (b.is_dir() and rb in ra.parents)


def refuse_inputs(path: PathLike, inputs: Iterable[PathLike | None], what: str = "output") -> None:
    """Refuse ``path`` when it is, lies inside or holds any of ``inputs``: inputs are never written.

    Parameters
    ----------
    path : path-like
        A file or folder the command is about to write.
    inputs : iterable of path-like
        Everything the command reads (``None`` entries are skipped).
    what : str
        How to name ``path`` in the message (``"output"``, ``"--json"``...).
    """
    for item in inputs:
        if item is None or not os.fspath(item):
            continue
        local = _local_file(item)
        if local is None:
            continue  # a network input: nothing geoseg writes can land there
        if is_same_or_inside(path, local) or is_same_or_inside(local, path):
            raise InputError(
                f"{what} {os.fspath(path)} would overwrite the input {os.fspath(item)}; inputs "
                "are never modified: choose another output path"
            )


def check_target(
    path: PathLike,
    *,
    overwrite: bool,
    inputs: Iterable[PathLike | None] = (),
    what: str = "output",
    folder: bool = False,
    make_parents: bool = False,
) -> Path:
    """Refuse an output path before any work is done, and return it.

    Parameters
    ----------
    path : path-like
        The file (or, with ``folder``, the folder) to write.
    overwrite : bool
        Whether an existing output may be replaced.
    inputs : iterable of path-like
        The command's inputs; none of them may be written.
    what : str
        How to name ``path`` in messages (the option, e.g. ``"--json"``).
    folder : bool
        The output is a folder (a Zarr store, a checkpoint); otherwise a regular file.
    make_parents : bool
        Missing parent folders will be created (:func:`make_dirs`): the nearest existing one
        must be a writable folder.

    Raises
    ------
    InputError
        ``path`` is one of the inputs.
    OutputError
        A symbolic link, the wrong kind (file vs folder), or a missing or unwritable parent.
    OutputExistsError
        It exists and ``overwrite`` is False.
    """
    target = _plain(path)
    refuse_inputs(target, inputs, what)
    if target.is_symlink():
        raise OutputError(
            f"{what} {target} is a symbolic link; geoseg never writes through links: remove it "
            "or choose another path"
        )
    _check_parent(target, what, make_parents)
    if target.exists():
        _check_existing(target, what, overwrite, folder)
    return target


def _check_parent(target: Path, what: str, make_parents: bool) -> None:
    """The folder ``target`` goes in (or its nearest existing ancestor) must be writable."""
    parent = target.parent
    if make_parents:
        parent = next(p for p in (parent, *parent.parents) if p.exists() or p == Path(p.anchor))
    if not parent.is_dir():
        raise OutputError(f"directory {parent} of {what} {target} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"directory {parent} is not writable; choose a writable {what} path")


def _check_existing(target: Path, what: str, overwrite: bool, folder: bool) -> None:
    """An existing output is replaced only with ``overwrite``, and only by its own kind."""
    if not overwrite:
        raise OutputExistsError(f"{what} {target} already exists; pass --overwrite to replace it")
    mode = target.lstat().st_mode
    if folder and not stat.S_ISDIR(mode):
        raise OutputError(f"{what} {target} exists and is not a folder; choose another path")
    if not folder and not stat.S_ISREG(mode):
        raise OutputError(f"{what} {target} exists and is not a regular file; choose another path")


def reserve_temp(target: PathLike, suffix: str = "") -> Path:
    """Create a new, empty, uniquely named file beside ``target`` and return its path.

    The file is created with ``O_EXCL`` (never an existing file or link), so whatever is later
    written to it cannot land elsewhere, and gets the umask's mode, like any file the user
    creates. The caller renames it into place or removes it.
    """
    t = _plain(target)
    fd, name = tempfile.mkstemp(prefix=f".{t.name}.", suffix=f".tmp{suffix}", dir=t.parent)
    os.fchmod(fd, umask_mode())
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def exclusive_temp(target: PathLike, suffix: str = "") -> Iterator[Path]:
    """:func:`reserve_temp` as a context: the file is removed unless it was renamed away."""
    tmp = reserve_temp(target, suffix)
    try:
        yield tmp
    finally:
        if tmp.is_symlink() or tmp.exists():
            remove_ours(tmp)


def temp_dir(target: PathLike, suffix: str = "") -> Path:
    """A new, uniquely named folder beside ``target`` (created exclusively, umask's mode)."""
    t = _plain(target)
    path = Path(tempfile.mkdtemp(prefix=f".{t.name}.", suffix=f".tmp{suffix}", dir=t.parent))
    os.chmod(path, umask_mode(directory=True))
    return path


def make_dirs(folder: PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents (umask's modes); return those created.

    The list (outermost first) lets a failed command remove exactly what it created, with
    :func:`remove_created`, and nothing that was there before.
    """
    target = _plain(folder)
    missing = [p for p in (target, *target.parents) if not p.exists()][::-1]
    created = []
    for p in missing:
        try:
            p.mkdir()
        except OSError as exc:
            remove_created(created)
            raise OutputError(f"cannot create the folder {p} ({exc.strerror or exc})") from None
        created.append(p)
    return created


def remove_created(created: Iterable[Path]) -> None:
    """Remove folders :func:`make_dirs` created, innermost first, where they are still empty."""
    for p in reversed(list(created)):
        with contextlib.suppress(OSError):
            p.rmdir()


def fsync_path(path: PathLike) -> None:
    """Flush a file, or the renames inside a folder, to disk (a no-op where it cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(
    path: PathLike,
    data: bytes | str,
    *,
    overwrite: bool = True,
    inputs: Iterable[PathLike | None] = (),
    what: str = "output",
) -> Path:
    """Write ``data`` to ``path`` through an exclusive temporary, fsync'd and renamed into place.

    The guard (:func:`check_target`) runs first, so an input, a link or (without
    ``overwrite``) an existing file is refused and nothing is written.
    """
    target = check_target(path, overwrite=overwrite, inputs=inputs, what=what)
    payload = data.encode() if isinstance(data, str) else data
    with exclusive_temp(target) as tmp:
        try:
            with open(tmp, "r+b") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(
                f"cannot write {what} {target} ({exc.strerror or exc}); check free disk space "
                "and permissions"
            ) from None
    fsync_path(target.parent)
    return target


def install(src: PathLike, dst: PathLike, is_ours: Callable[[Path], bool] | None = None) -> None:
    """Move the finished ``src`` to ``dst`` atomically (files: one ``os.replace``).

    A folder at ``dst`` is swapped out first (renamed to a fresh temporary name, then removed):
    only when ``is_ours(dst)`` recognises it as geoseg's own output, else OutputError.
    A symbolic link at ``dst`` is replaced itself, never followed.
    """
    s, d = _plain(src), _plain(dst)
    if d.is_dir() and not d.is_symlink():
        if is_ours is None or not is_ours(d):
            raise OutputError(
                f"{d} is a folder geoseg did not write; --overwrite only replaces geoseg's own "
                "outputs: remove it yourself or choose another path"
            )
        old = temp_dir(d, ".old")
        os.replace(d, old / d.name)
        try:
            os.replace(s, d)
        except BaseException:  # a full disk, or Ctrl-C between the two renames
            os.replace(old / d.name, d)  # put the old output back: nothing lost
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(s, d)
    fsync_path(d.parent)


def _local_file(path: PathLike) -> str | None:
    """The local file behind ``path`` (a ``/vsizip/`` path's archive); None for a network one."""
    from geoseg.io.raster import gdal_local_file

    return gdal_local_file(path)


def stamps(paths: Iterable[PathLike]) -> list[list]:
    """``[path, size, mtime_ns]`` of each existing file of ``paths``.

    A cheap identity of inputs too large to hash (rasters): a rewritten file gets a new stamp,
    so state recorded against the old one is not trusted. A GDAL URL gets
    ``[url, "gdal", ...]`` with what GDAL reports of it (size and ETag / Last-Modified of a
    network file, see :func:`geoseg.io.raster.gdal_identity`), or ``[url, "gdal", None]``
    when nothing identifies its content (:func:`unverified` lists those).
    """
    from geoseg.io.raster import gdal_identity, is_gdal_url

    out: list[list] = []
    for item in paths:
        if is_gdal_url(item):
            out.append([os.fspath(item), "gdal", gdal_identity(os.fspath(item))])
            continue
        with contextlib.suppress(OSError):
            st = os.stat(item)
            out.append([str(Path(item).resolve()), st.st_size, st.st_mtime_ns])
    return out


def unverified(stamped: Iterable[list]) -> list[str]:
    """The GDAL URLs among :func:`stamps` whose content nothing identifies (no ETag, no date)."""
    return [s[0] for s in stamped if len(s) == 3 and s[1] == "gdal" and s[2] is None]


# content_digest's results in this process, by the identities of the files hashed (see there)
_DIGESTS: dict[tuple, str] = {}
_DIGESTS_KEPT = 64
# A file changed this recently is not kept: the kernel stamps times at a coarse tick, so a
# second write within the same tick would leave its times as they were.
_RACY_NS = 2_000_000_000


def content_digest(paths: Iterable[PathLike]) -> str:
    """SHA-256 of the names and contents of the files ``paths`` (small inputs: a model).

    Results are kept in this process by each file's device, inode, size, and modification and
    change times: a batch of rasters hashes its model once, not once per raster. A rewrite
    moves the change time, which no tool can set back, so a changed file is hashed again
    (files changed in the last 2 s are not kept, as git does with its index).
    """
    import hashlib
    import time

    from geoseg.io.raster import is_gdal_url

    items = list(paths)
    for item in items:
        if is_gdal_url(item):
            raise InputError(
                f"{os.fspath(item)} is a GDAL URL, whose content geoseg cannot hash; copy it "
                "to a local file first"
            )
    key = tuple(_identity(item) for item in items)
    if key in _DIGESTS:
        return _DIGESTS[key]
    digest = hashlib.sha256()
    for item in items:
        digest.update(Path(item).name.encode())
        with open(item, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    if all(time.time_ns() - k[-1] >= _RACY_NS for k in key):
        if len(_DIGESTS) >= _DIGESTS_KEPT:
            _DIGESTS.clear()
        _DIGESTS[key] = digest.hexdigest()
    return digest.hexdigest()


def _identity(path: PathLike) -> tuple:
    """What tells a file's content apart without reading it (see :func:`content_digest`)."""
    st = os.stat(path)
    name = os.fspath(path)
    return (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remove_ours(path: PathLike) -> None:
    """Remove a file or folder geoseg created itself (a link is unlinked, never followed)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
