"""Hostile inputs for ``geoseg predict``: nothing lost, nothing trusted unchecked.

Every case drives the real CLI (in-process ``cli.main``) and asserts the exit code, exactly
one error line without a traceback, and that every file under the test folder (inputs,
checkpoint, earlier outputs, partial runs) is byte for byte and mode for mode as before.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import make_checkpoint
from hostile import assert_refused, run_cli, snapshot

from geoseg.run.resume import partial_dir

TINY = ["--tile", "32", "--overlap", "8", "--block-size", "32", "--no-progress"]


CKPT_TILE = 32  # the conftest ckpt fixture's tile


@pytest.fixture
def scene(make_raster):
    return make_raster(height=96, width=64, name="scene.tif")


def refused(root, *args, words=()):
    before = snapshot(root)
    result = run_cli(*args)
    assert_refused(result, before, snapshot(root), *words)
    return result


# --------------------------------------------------------------------------------------------
# outputs that would write an input
# --------------------------------------------------------------------------------------------


def test_a_probabilities_sidecar_name_never_deletes_an_input(tmp_path, make_raster, ckpt):
    """`predict scene_probabilities.tif scene.tif` deleted its input as a 'stale sidecar'."""
    src = make_raster(height=64, width=64, name="scene_probabilities.tif")
    out = tmp_path / "scene.tif"
    for extra in ([], ["--overwrite"], ["--probabilities", "--overwrite"]):
        refused(tmp_path, "predict", src, out, "--model", ckpt, *TINY, *extra, words=["input"])


def make_case(tmp_path, scene, ckpt, case):
    """Arguments of a predict whose output (or one of its sidecars) is one of its inputs."""
    if case == "same":
        return [scene, scene, "--overwrite"]
    if case == "spelled_differently":
        (tmp_path / "sub").mkdir()
        return [scene, tmp_path / "sub" / ".." / "scene.tif", "--overwrite"]
    if case == "hardlink":
        os.link(scene, tmp_path / "hard.tif")
        return [scene, tmp_path / "hard.tif", "--overwrite"]
    if case == "inside_checkpoint":
        return [scene, ckpt / "out.tif", "--overwrite"]
    if case == "config_file":
        cfg = tmp_path / "opts.tif"
        cfg.write_text("blend: mean\n")
        return [scene, cfg, "--config", cfg, "--overwrite"]
    if case == "aux_sidecar":
        aux = tmp_path / "o.tif.aux.xml"
        aux.write_bytes(scene.read_bytes())  # a raster GDAL opens whatever its name
        return [aux, tmp_path / "o.tif", "--overwrite"]
    if case == "probabilities_file":
        prob = tmp_path / "o_probabilities.tif"
        prob.write_bytes(scene.read_bytes())
        return [prob, tmp_path / "o.tif", "--probabilities", "--overwrite"]
    if case == "zarr_input_folder":
        return [scene, ckpt, "--overwrite"]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "same",
        "spelled_differently",
        "hardlink",
        "inside_checkpoint",
        "config_file",
        "aux_sidecar",
        "probabilities_file",
        "zarr_input_folder",
    ],
)
def test_no_output_file_is_an_input(tmp_path, scene, ckpt, case):
    args = make_case(tmp_path, scene, ckpt, case)
    words = ["unsupported extension"] if case == "zarr_input_folder" else ["input"]
    refused(tmp_path, "predict", args[0], args[1], "--model", ckpt, *TINY, *args[2:], words=words)


def test_overwrite_never_replaces_what_geoseg_did_not_write(tmp_path, scene, ckpt, make_raster):
    user = make_raster(height=32, width=32, name="user.tif")  # the user's own raster
    args = ["--model", ckpt, *TINY, "--overwrite"]
    refused(tmp_path, "predict", scene, user, *args, words=["geoseg"])
    store = tmp_path / "data.zarr"
    store.mkdir()
    (store / "notes.txt").write_text("my data")
    refused(tmp_path, "predict", scene, store, *args, words=["geoseg"])
    # a class map geoseg wrote is replaced
    out = tmp_path / "out.tif"
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY).code == 0
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY, "--overwrite").code == 0


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_zarr_path_that_is_a_file_or_a_link(tmp_path, scene, ckpt, overwrite):
    (tmp_path / "f.zarr").write_text("not a store")
    words = ["already exists"] if not overwrite else ["not a folder"]
    refused(tmp_path, "predict", scene, tmp_path / "f.zarr", "--model", ckpt, *TINY, *overwrite,
            words=words)
    (tmp_path / "real").mkdir()
    (tmp_path / "l.zarr").symlink_to(tmp_path / "real")
    refused(tmp_path, "predict", scene, tmp_path / "l.zarr", "--model", ckpt, *TINY, *overwrite,
            words=["symbolic link"])


def test_an_output_link_is_never_written_through(tmp_path, scene, ckpt, make_raster):
    victim = make_raster(height=32, width=32, name="victim.tif")
    (tmp_path / "o.tif").symlink_to(victim)
    refused(tmp_path, "predict", scene, tmp_path / "o.tif", "--model", ckpt, *TINY, "--overwrite",
            words=["symbolic link"])
    (tmp_path / "p.tif.aux.xml").symlink_to(victim)
    refused(tmp_path, "predict", scene, tmp_path / "p.tif", "--model", ckpt, *TINY, "--overwrite",
            words=["symbolic link"])


# --------------------------------------------------------------------------------------------
# batch names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../{stem}.tif", ["plain file name"]),
        ("/tmp/{stem}.tif", ["plain file name"]),
        ("sub/{stem}.tif", ["plain file name"]),
        ("{stem.nope}", ["unknown field"]),
        ("{stem", ["'--name'", "is not valid"]),
        ("{0}.tif", ["unknown field"]),
        ("{stem}.png", ["extension"]),
        ("..", ["plain file name"]),
    ],
)
def test_batch_names_stay_inside_the_output_dir(tmp_path, scene, ckpt, name, words):
    (tmp_path / "out").mkdir()
    refused(tmp_path, "predict", scene, "--output-dir", tmp_path / "out", "--name", name,
            "--model", ckpt, *TINY, words=words)


def test_batch_output_that_is_another_input(tmp_path, make_raster, ckpt):
    a = make_raster(height=40, width=40, name="a.tif")
    b = make_raster(height=40, width=40, name="a_classes.tif")
    refused(tmp_path, "predict", a, b, "--output-dir", tmp_path, "--model", ckpt, *TINY,
            "--overwrite", words=["input"])


@pytest.mark.parametrize("content", [b"\xff\xfe\x00b\x00a\x00d", b"a.tif\x00b.tif", "dir"])
def test_bad_from_list(tmp_path, scene, ckpt, content):
    lst = tmp_path / "list.txt"
    if content == "dir":
        lst.mkdir()
    else:
        lst.write_bytes(content)
    (tmp_path / "out").mkdir()
    refused(tmp_path, "predict", "--from-list", lst, "--output-dir", tmp_path / "out",
            "--model", ckpt, *TINY, words=["--from-list"])


# --------------------------------------------------------------------------------------------
# sizes and non-regular inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--tile", "60000"], ["--tile", "gib"]),
        (["--tile", "8192"], ["--tile", "gib"]),  # one padded window of a 96 x 64 raster
    ],
)
def test_sizes_are_checked_before_allocating(tmp_path, scene, ckpt, args, words):
    refused(tmp_path, "predict", scene, tmp_path / "o.tif", "--model", ckpt, *args, words=words)


def test_a_fifo_input_is_refused_without_hanging(tmp_path, ckpt):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    refused(tmp_path, "predict", fifo, tmp_path / "o.tif", "--model", ckpt, *TINY,
            words=["not a regular file"])


# --------------------------------------------------------------------------------------------
# partial runs: locks, tampered progress, a full disk
# --------------------------------------------------------------------------------------------


def interrupted_run(monkeypatch, scene, out, ckpt, extra=()):
    """A run that failed after two of its three block rows were durable (a partial folder)."""
    from geoseg.errors import OutputError
    from geoseg.io.writers import GeoTiffWriter

    real = GeoTiffWriter._write_block

    def failing(self, row, col, classes, q):
        if row >= 64:
            raise OutputError("simulated failure")
        return real(self, row, col, classes, q)

    with monkeypatch.context() as m:
        m.setattr(GeoTiffWriter, "_write_block", failing)
        result = run_cli("predict", scene, out, "--model", ckpt, *TINY, *extra)
    assert result.code != 0 and "simulated failure" in result.err
    doc = json.loads((partial_dir(out) / "progress.json").read_text())
    assert doc["rows_done"] == 64 and len(doc["digests"]) == 2
    return doc


def read(path):
    with rasterio.open(path) as src:
        return src.read()


def tamper_progress(pdir, key, value):
    path = pdir / "progress.json"
    doc = json.loads(path.read_text())
    doc[key] = value
    path.write_text(json.dumps(doc))


TAMPERED = {
    "rows_done_larger": ("rows_done", 96, "digests"),
    "rows_done_negative": ("rows_done", -32, "rows_done"),
    "rows_done_unaligned": ("rows_done", 40, "block boundary"),
    "rows_done_string": ("rows_done", "64", "rows_done"),
    "rows_done_list": ("rows_done", [64], "rows_done"),
    "rows_done_bool": ("rows_done", True, "rows_done"),
    "rows_done_huge": ("rows_done", 10**30, "rows_done"),
    "digests_missing": ("digests", None, "digests"),
    "digest_changed": ("digests", ["0" * 64, "1" * 64], "differ"),
    "digest_not_hex": ("digests", [1, 2], "sha-256"),
    "identity_missing": ("identity", None, "identity"),
    "identity_other": ("identity", {"input": "x"}, "different"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_progress_is_refused(tmp_path, monkeypatch, scene, ckpt, case):
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    key, value, word = TAMPERED[case]
    tamper_progress(partial_dir(out), key, value)
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, "--resume", words=[word])


@pytest.mark.parametrize("content", ["{not json", "[]", "\x00\x01binary", "link"])
def test_unreadable_progress_file_is_refused(tmp_path, monkeypatch, scene, ckpt, content):
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    path = partial_dir(out) / "progress.json"
    if content == "link":
        target = tmp_path / "elsewhere.json"
        target.write_text(path.read_text())
        path.unlink()
        path.symlink_to(target)
    else:
        path.write_text(content)
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, "--resume",
            words=["progress.json"])


def test_a_changed_partial_file_is_refused_and_an_intact_one_resumes(
    tmp_path, monkeypatch, scene, ckpt
):
    ref = tmp_path / "ref.tif"
    assert run_cli("predict", scene, ref, "--model", ckpt, *TINY).code == 0
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    classes = partial_dir(out) / "classes.tif"
    original = classes.read_bytes()
    window = rasterio.windows.Window(0, 40, 8, 8)
    with rasterio.open(classes, "r+") as dst:  # someone edits the partial map
        dst.write((dst.read(window=window) + 1) % 4, window=window)
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, "--resume", words=["differ"])
    classes.write_bytes(original)
    classes.chmod(0o644)
    result = run_cli("predict", scene, out, "--model", ckpt, *TINY, "--resume")
    assert result.code == 0, result.err
    assert np.array_equal(read(out), read(ref))
    assert not partial_dir(out).exists()


def test_a_partial_file_replaced_by_a_link_is_refused(tmp_path, monkeypatch, scene, ckpt):
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    classes = partial_dir(out) / "classes.tif"
    moved = tmp_path / "moved.tif"
    classes.rename(moved)
    classes.symlink_to(moved)
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, "--resume",
            words=["not a regular file"])


@pytest.mark.parametrize(
    "lock",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"pid": "abc", "host": "h"}),
        json.dumps({"pid": 10**30, "host": "h"}),
        json.dumps({"pid": -5, "host": "h"}),
        json.dumps({"pid": 12.5, "host": "h"}),
        json.dumps({"pid": 123}),
    ],
)
def test_malformed_lock_is_refused(tmp_path, scene, ckpt, lock):
    out = tmp_path / "o.tif"
    pdir = partial_dir(out)
    pdir.mkdir()
    (pdir / "lock").write_text(lock)
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, words=["lock"])


def test_a_live_lock_is_respected(tmp_path, scene, ckpt):
    out = tmp_path / "o.tif"
    pdir = partial_dir(out)
    pdir.mkdir()
    (pdir / "lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, words=["another job"])


@pytest.mark.parametrize("kind", ["file", "link", "foreign_content"])
def test_a_partial_folder_that_is_not_geosegs(tmp_path, scene, ckpt, kind):
    out = tmp_path / "o.tif"
    pdir = partial_dir(out)
    if kind == "file":
        pdir.write_text("x")
        words = ["not a folder"]
    elif kind == "link":
        (tmp_path / "elsewhere").mkdir()
        pdir.symlink_to(tmp_path / "elsewhere")
        words = ["symbolic link"]
    else:
        pdir.mkdir()
        (pdir / "thesis.docx").write_text("precious")
        words = ["did not write"]
    for extra in ([], ["--resume"]):
        if kind == "foreign_content" and extra:
            words = ["nothing to resume"]
        refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, *extra, words=words)


def test_a_full_disk_while_recording_progress(tmp_path, monkeypatch, scene, ckpt):
    """ENOSPC while progress.json is written: one line, and no half-written progress."""
    import geoseg.io.files as files

    real = files.os.fsync

    def full_disk(fd):
        if "progress.json" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", full_disk)
    result = run_cli("predict", scene, tmp_path / "o.tif", "--model", ckpt, *TINY)
    assert result.code != 0 and "Traceback" not in result.err
    assert len(result.error_lines) == 1 and "space" in result.error_lines[0]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["scene.tif"], left  # no progress was durable: nothing is kept


# --------------------------------------------------------------------------------------------
# what a good run writes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
@pytest.mark.parametrize("name", ["o.tif", "o.zarr"])
def test_outputs_get_the_umask_modes(tmp_path, scene, ckpt, umask, name):
    old = os.umask(umask)
    try:
        result = run_cli("predict", scene, tmp_path / name, "--model", ckpt, *TINY,
                         "--probabilities")
    finally:
        os.umask(old)
    assert result.code == 0, result.err
    for p in [tmp_path / name, *(tmp_path / name).rglob("*")]:
        if p == scene:
            continue
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_gcp_georeference_is_carried_over(tmp_path, ckpt):
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    gcps = [
        GroundControlPoint(0, 0, 500000.0, 4200000.0),
        GroundControlPoint(0, 63, 500630.0, 4200000.0),
        GroundControlPoint(63, 0, 500000.0, 4199370.0),
    ]
    src = tmp_path / "gcp.tif"
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    with rasterio.open(src, "w", driver="GTiff", height=64, width=64, count=3, dtype="uint8") as d:
        d.gcps = (gcps, CRS.from_epsg(32618))
        d.write(data)
    for name in ("o.tif", "o.zarr"):
        result = run_cli("predict", src, tmp_path / name, "--model", ckpt, *TINY)
        assert result.code == 0, result.err
        assert "has no georeference" not in result.err
    with rasterio.open(tmp_path / "o.tif") as out:
        points, crs = out.gcps
    assert crs.to_epsg() == 32618 and [(p.row, p.col, p.x) for p in points] == [
        (p.row, p.col, p.x) for p in gcps
    ]
    import rioxarray  # noqa: F401
    import xarray as xr

    stored = xr.open_zarr(tmp_path / "o.zarr").rio.get_gcps()
    assert len(stored) == 3


def test_an_output_inside_a_zarr_input_is_refused(tmp_path, ckpt):
    import xarray as xr

    store = tmp_path / "scene.zarr"
    data = np.random.default_rng(1).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    xr.Dataset({"image": (("band", "y", "x"), data)}).to_zarr(store, zarr_format=3)
    refused(tmp_path, "predict", store, store / "classes.tif", "--model", ckpt, *TINY,
            words=["input"])


def test_probabilities_file_not_written_by_geoseg_is_kept(tmp_path, scene, ckpt, make_raster):
    out = tmp_path / "o.tif"
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY).code == 0
    make_raster(height=16, width=16, name="o_probabilities.tif")  # the user's file
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, "--probabilities",
            "--overwrite", words=["geoseg wrote"])
    # without --probabilities the user's file is left alone (only geoseg's stale ones go)
    before = snapshot(tmp_path)["o_probabilities.tif"]
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY, "--overwrite").code == 0
    assert snapshot(tmp_path)["o_probabilities.tif"] == before


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/o.tif"), ["/data/o.tif", "space"]),
        (MemoryError(), ["out of memory", "--tile"]),
    ],
)
def test_system_errors_are_one_line(tmp_path, monkeypatch, scene, ckpt, exc, words):
    """Where the system refuses (disk, memory) outside geoseg's own checks: still one line."""
    import geoseg.run.pipeline

    def fail(*args, **kw):
        raise exc

    monkeypatch.setattr(geoseg.run.pipeline, "predict_file", fail)
    refused(tmp_path, "predict", scene, tmp_path / "o.tif", "--model", ckpt, *TINY, words=words)


@pytest.mark.parametrize("command", ["predict", "tiles"])
def test_a_raster_declaring_absurd_dimensions(tmp_path, ckpt, command):
    """A 300-byte VRT of 10^7 x 10^7 pixels: refused at once, not planned window by window."""
    vrt = tmp_path / "huge.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="10000000" rasterYSize="10000000">'
        "<GeoTransform>0, 1, 0, 0, 0, -1</GeoTransform>"
        + "".join(f'<VRTRasterBand dataType="Byte" band="{b}"></VRTRasterBand>' for b in (1, 2, 3))
        + "</VRTDataset>"
    )
    args = ["--model", ckpt, *TINY] if command == "predict" else ["--no-skip-check"]
    out = [tmp_path / "o.tif"] if command == "predict" else []
    refused(tmp_path, command, vrt, *out, *args, words=["windows"])


# --------------------------------------------------------------------------------------------
# found in review: what a partial run may and may not be resumed into
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["model", "input"])
def test_resume_into_another_model_or_scene_is_refused(tmp_path, monkeypatch, scene, change):
    ckpt = make_checkpoint(tmp_path / "m.geoseg", tile=32)
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    if change == "model":  # retrained into the same folder
        make_checkpoint(tmp_path / "m2.geoseg", tile=32, seed=1)
        weights = (tmp_path / "m2.geoseg" / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(weights)
        word = "checkpoint_digest"
    else:  # the scene re-downloaded to the same path
        with rasterio.open(scene, "r+") as dst:
            dst.write(255 - dst.read())
        word = "input_files"
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, "--resume", words=[word])


def test_resume_with_bands_and_cog(tmp_path, monkeypatch, make_raster, ckpt):
    src = make_raster(height=96, width=64, bands=4, name="four.tif")
    extra = ["--bands", "3,2,1", "--cog", "--probabilities"]
    ref = tmp_path / "ref.tif"
    assert run_cli("predict", src, ref, "--model", ckpt, *TINY, *extra).code == 0
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, src, out, ckpt, extra)
    result = run_cli("predict", src, out, "--model", ckpt, *TINY, *extra, "--resume")
    assert result.code == 0, result.err
    assert np.array_equal(read(out), read(ref))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["progress.json", "lock"])
def test_deeply_nested_json_state(tmp_path, monkeypatch, scene, ckpt, name):
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    (partial_dir(out) / name).write_text("[" * 200000 + "]" * 200000)
    extra = ["--resume"] if name == "progress.json" else ["--overwrite"]
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, *extra, words=[name])


def test_a_tampered_partial_sidecar(tmp_path, monkeypatch, scene, ckpt):
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    (partial_dir(out) / "classes.tif.aux.xml").write_text("<PAMDataset><oops")
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, "--resume",
            words=["aux.xml"])


def test_a_failed_cog_leaves_no_temporary_and_stays_resumable(tmp_path, monkeypatch, scene, ckpt):
    from geoseg.io import writers

    def no_install(*args, **kw):
        raise writers.OutputError("simulated failure while installing")

    out = tmp_path / "o.tif"
    with monkeypatch.context() as m:
        m.setattr(writers, "install", no_install)
        result = run_cli("predict", scene, out, "--model", ckpt, *TINY, "--cog")
    assert result.code != 0 and "simulated failure" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".o.tif.geoseg-partial", "scene.tif"]
    result = run_cli("predict", scene, out, "--model", ckpt, *TINY, "--cog", "--resume")
    assert result.code == 0, result.err
    assert " 0 windows run" in result.out  # every row was durable: only the commit is redone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.qml", "o.tif", "o.tif.aux.xml",
                                                          "scene.tif"]
    ref = tmp_path / "ref.tif"
    assert run_cli("predict", scene, ref, "--model", ckpt, *TINY, "--cog").code == 0
    assert np.array_equal(read(out), read(ref))


def test_overwrite_removes_only_geosegs_own_stale_probabilities(tmp_path, scene, ckpt):
    out = tmp_path / "o.tif"
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY).code == 0
    other = tmp_path / "o_probabilities.tif"  # a class map the user wrote under that name
    assert run_cli("predict", scene, other, "--model", ckpt, *TINY).code == 0
    before = snapshot(tmp_path)
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY, "--overwrite").code == 0
    after = snapshot(tmp_path)
    for name in ("o_probabilities.tif", "o_probabilities.tif.aux.xml"):
        assert after[name] == before[name]
    # geoseg's own stale probabilities go, with their sidecar
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY, "--probabilities",
                   "--overwrite", "--block-size", "32").code != 0  # the user's map is in the way
    other.unlink()
    Path(f"{other}.aux.xml").unlink()
    other.with_suffix(".qml").unlink()  # the QGIS style of that class map
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY, "--probabilities",
                   "--overwrite").code == 0
    assert run_cli("predict", scene, out, "--model", ckpt, *TINY, "--overwrite").code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.qml", "o.tif", "o.tif.aux.xml",
                                                          "scene.tif"]


def test_batch_outputs_that_collide_through_their_sidecars(tmp_path, make_raster, ckpt):
    (tmp_path / "s").mkdir()
    a = make_raster(height=40, width=40, name="s/x_probabilities.tif")
    b = make_raster(height=40, width=40, name="s/x.tif")
    (tmp_path / "o").mkdir()
    refused(tmp_path, "predict", a, b, "--output-dir", tmp_path / "o", "--name", "{stem}.tif",
            "--model", ckpt, *TINY, "--overwrite", words=["both write"])


def test_batch_resume_does_not_take_a_foreign_file_as_done(tmp_path, scene, ckpt):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "scene_classes.tif").write_text("not a class map")
    before = snapshot(tmp_path)
    result = run_cli("predict", scene, "--output-dir", tmp_path / "o", "--model", ckpt, *TINY,
                     "--resume")
    assert result.code == 1 and "already done" not in result.out and "1 failed" in result.out
    assert snapshot(tmp_path) == before


def test_a_rerun_without_resume_keeps_an_earlier_partial_run(tmp_path, monkeypatch, scene, ckpt):
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    refused(tmp_path, "predict", scene, out, "--model", ckpt, *TINY, words=["--resume"])
    result = run_cli("predict", scene, out, "--model", ckpt, *TINY, "--overwrite")
    assert result.code == 0, result.err
    assert not partial_dir(out).exists()


def test_a_vrt_whose_source_is_a_fifo(tmp_path, ckpt):
    os.mkfifo(tmp_path / "fifo.tif")
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        '<SourceFilename relativeToVRT="1">fifo.tif</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    vrt = tmp_path / "in.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="80" rasterYSize="96">{bands}</VRTDataset>')
    refused(tmp_path, "predict", vrt, tmp_path / "o.tif", "--model", ckpt, *TINY,
            words=["fifo.tif", "not a regular file"])


def test_batch_name_format_specs_are_refused(tmp_path, scene, ckpt):
    (tmp_path / "o").mkdir()
    refused(tmp_path, "predict", scene, "--output-dir", tmp_path / "o", "--name",
            "{stem:>2000000000}.tif", "--model", ckpt, *TINY, words=["format spec"])


def test_a_stale_lock_is_taken_over_by_one_job_only(tmp_path):
    """Jobs racing to take over a dead job's lock: exactly one of them gets it."""
    import threading

    from geoseg.errors import OutputError
    from geoseg.run.resume import Lock

    pdir = partial_dir(tmp_path / "o.tif")
    pdir.mkdir()
    (pdir / "lock").write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))
    won, refused_ = [], []
    start = threading.Barrier(8)

    def take():
        start.wait()
        try:
            won.append(Lock.acquire(pdir))
        except OutputError:
            refused_.append(1)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused_) == 7


def test_a_viewer_writing_the_inputs_sidecar_does_not_block_resume(tmp_path, monkeypatch, scene,
                                                                   ckpt):
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    Path(f"{scene}.aux.xml").write_text("<PAMDataset/>")  # e.g. QGIS computing statistics
    result = run_cli("predict", scene, out, "--model", ckpt, *TINY, "--resume")
    assert result.code == 0, result.err


def test_a_refused_resume_says_how_to_start_over(tmp_path, monkeypatch, scene, ckpt):
    out = tmp_path / "o.tif"
    interrupted_run(monkeypatch, scene, out, ckpt)
    tamper_progress(partial_dir(out), "rows_done", 40)
    result = run_cli("predict", scene, out, "--model", ckpt, *TINY, "--resume")
    assert result.code != 0 and "--overwrite instead of --resume" in result.err
    result = run_cli("predict", scene, out, "--model", ckpt, *TINY, "--overwrite")
    assert result.code == 0, result.err


def test_a_missing_output_dir_is_made_and_removed_again_when_nothing_was_written(
    tmp_path, scene, ckpt
):
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    result = run_cli("predict", bad, "--output-dir", tmp_path / "out" / "a", "--model", ckpt,
                     *TINY)
    assert result.code == 1 and "1 failed" in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tif", "scene.tif"]
    result = run_cli("predict", scene, "--output-dir", tmp_path / "out" / "a", "--model", ckpt,
                     *TINY)
    assert result.code == 0, result.err
    assert (tmp_path / "out" / "a" / "scene_classes.tif").is_file()
    (tmp_path / "f").write_text("x")
    refused(tmp_path, "predict", scene, "--output-dir", tmp_path / "f", "--model", ckpt, *TINY,
            words=["is a file"])
