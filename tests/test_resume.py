"""Kill a prediction mid-run, then --resume: the result equals an undisturbed run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import rasterio

from geoseg.run.resume import partial_dir


def cmd(*args):
    return [sys.executable, "-c", "import cli; cli.main()", *map(str, args)]


def read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_kill_then_resume_gives_the_undisturbed_result(tmp_path, make_raster, ckpt):
    src = make_raster(height=1024, width=256, name="tall.tif")
    opts = [
        "--model",
        ckpt,
        "--tile",
        "64",
        "--overlap",
        "16",
        "--block-size",
        "64",
        "--batch-size",
        "2",
        "--no-progress",
    ]
    ref = tmp_path / "ref.tif"
    assert subprocess.run(cmd("predict", src, ref, *opts), capture_output=True).returncode == 0
    out = tmp_path / "out.tif"
    pdir = partial_dir(out)
    job = subprocess.Popen(
        cmd("predict", src, out, *opts),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not (pdir / "progress.json").exists() and time.time() < deadline:
        assert job.poll() is None, job.communicate()[1]
        time.sleep(0.05)
    # kill at once: the job may finish its remaining block rows in well under a second
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    done = json.loads((pdir / "progress.json").read_text())["rows_done"]
    assert 0 < done < 1024, done
    assert not out.exists(), "a killed job must not leave a final output"

    # a different option cannot resume this run
    other = subprocess.run(
        cmd("predict", src, out, *opts, "--blend", "mean", "--resume"),
        capture_output=True,
        text=True,
    )
    assert other.returncode != 0 and "plan" in other.stderr and "Traceback" not in other.stderr

    resumed = subprocess.run(
        cmd("predict", src, out, *opts, "--resume"), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"row {done}" in resumed.stderr
    run = int(resumed.stdout.split(": ")[1].split(" windows run")[0])
    total = int(resumed.stdout.split("skipped of ")[1].split(" in the grid")[0])
    assert run < total  # only what was missing (plus the windows reaching back over the seam)
    assert np.array_equal(read(out), read(ref))
    assert not pdir.exists()


def test_a_second_job_on_the_same_output_is_refused(tmp_path, make_raster, ckpt):
    src = make_raster(height=64, width=64)
    out = tmp_path / "o.tif"
    pdir = partial_dir(out)
    pdir.mkdir()
    (pdir / "lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    proc = subprocess.run(
        cmd("predict", src, out, "--model", ckpt, "--tile", "64"), capture_output=True, text=True
    )
    assert proc.returncode != 0 and "another job" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    # a stale lock (dead pid on this host) is taken over
    (pdir / "lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    proc = subprocess.run(
        cmd("predict", src, out, "--model", ckpt, "--tile", "64"), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and not pdir.exists()


def test_resume_without_a_partial_run_is_a_clear_error(tmp_path, make_raster, ckpt):
    src = make_raster(height=64, width=64)
    proc = subprocess.run(
        cmd("predict", src, tmp_path / "x.tif", "--model", ckpt, "--tile", "64", "--resume"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "nothing to resume" in proc.stderr
    assert not partial_dir(tmp_path / "x.tif").exists()
