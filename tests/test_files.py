"""The one output guard (geoseg.io.files): inputs, links, exclusive temporaries, installs."""

from __future__ import annotations

import errno
import os

import pytest

from geoseg.errors import InputError, OutputError, OutputExistsError
from geoseg.io import files


def test_refuse_inputs_both_ways_and_through_links(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.tif").write_text("x")
    os.link(data / "a.tif", tmp_path / "hard.tif")
    for out in (data / "a.tif", data / "b.json", data / ".." / "data"):
        with pytest.raises(InputError, match="would overwrite the input"):
            files.refuse_inputs(out, [data])
    with pytest.raises(InputError, match="would overwrite the input"):  # the same inode
        files.refuse_inputs(tmp_path / "hard.tif", [data / "a.tif"])
    with pytest.raises(InputError):  # an output folder that holds an input
        files.refuse_inputs(tmp_path, [data / "a.tif"])
    files.refuse_inputs(tmp_path / "c.json", [data, None, ""])


def test_check_target(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    with pytest.raises(OutputError, match="symbolic link"):
        files.check_target(tmp_path / "link", overwrite=True)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        files.check_target(tmp_path / "f", overwrite=False)
    with pytest.raises(OutputError, match="not a folder"):
        files.check_target(tmp_path / "f", overwrite=True, folder=True)
    with pytest.raises(OutputError, match="does not exist"):
        files.check_target(tmp_path / "no" / "x", overwrite=False)
    assert files.check_target(tmp_path / "f", overwrite=True) == tmp_path / "f"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_modes_and_no_leftovers(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = files.atomic_write(tmp_path / "r.json", "{}")
        folder = files.temp_dir(tmp_path / "store")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, "r.json"]


def test_atomic_write_failure_leaves_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OutputError, match="space"):
        files.atomic_write(out, "new")
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_install_replaces_only_recognised_folders_and_restores_on_failure(tmp_path, monkeypatch):
    old, new = tmp_path / "out", tmp_path / "new"
    for d, text in ((old, "old"), (new, "new")):
        d.mkdir()
        (d / "a").write_text(text)
    with pytest.raises(OutputError, match="did not write"):
        files.install(new, old, is_ours=lambda p: False)
    real, calls = os.replace, []

    def second_fails(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(files.os, "replace", second_fails)
    with pytest.raises(OSError):
        files.install(new, old, is_ours=lambda p: True)
    assert (old / "a").read_text() == "old" and (new / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]


def test_content_digest_is_kept_until_a_file_changes(tmp_path, monkeypatch):
    import hashlib
    import time

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights" * 1000)
    b.write_bytes(b"config")
    expected = hashlib.sha256(b"a.bin" + b"weights" * 1000 + b"b.bin" + b"config").hexdigest()
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *x, **k: opened.append(x[0]) or real_open(*x, **k))
    assert files.content_digest([a, b]) == expected
    assert files.content_digest([a, b]) == expected and len(opened) == 4  # just written: read
    monkeypatch.setattr(files, "_RACY_NS", 0)  # as if written long ago
    assert files.content_digest([a, b]) == expected
    opened.clear()
    assert files.content_digest([a, b]) == expected and not opened  # kept: nothing read
    before = a.stat()
    time.sleep(0.05)  # past the kernel's timestamp tick
    with real_open(a, "r+b") as fh:  # rewritten in place, same size, modification time put back
        fh.write(b"W")
    os.utime(a, ns=(before.st_atime_ns, before.st_mtime_ns))
    changed = hashlib.sha256(b"a.bin" + b"Weights" + b"weights" * 999 + b"b.bin" + b"config")
    assert files.content_digest([a, b]) == changed.hexdigest() and opened
    with pytest.raises(FileNotFoundError):
        files.content_digest([tmp_path / "gone.bin"])
