"""Batch jobs and a real dask.distributed cluster (scheduler + worker processes on loopback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

DASK = str(Path(sys.executable).parent / "dask")


def geoseg(*args, **kw):
    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes; always torn down."""
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    ]
    try:
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        DASK,
                        "worker",
                        addr,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--name",
                        f"w{i}",
                        "--local-directory",
                        str(tmp_path / f"w{i}"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    env=env,
                )
            )
        from distributed import Client

        with Client(addr, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        yield addr, procs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_batch_with_a_corrupt_raster_reports_it_and_finishes_the_rest(tmp_path, make_raster, ckpt):
    a = make_raster(height=90, width=80, name="a.tif", seed=1)
    b = make_raster(height=70, width=100, name="b.tif", seed=2)
    bad = tmp_path / "c.tif"
    bad.write_bytes(a.read_bytes()[:300])
    out = tmp_path / "out"
    out.mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text(f"{b}\n")
    proc = geoseg(
        "predict",
        a,
        bad,
        "--from-list",
        lst,
        "--output-dir",
        out,
        "--model",
        ckpt,
        "--tile",
        "64",
        "--no-progress",
    )
    assert proc.returncode == 1, proc.stderr
    assert "c.tif: FAILED" in proc.stdout and "2 of 3 rasters done, 1 failed" in proc.stdout
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tif") == [
        "a_classes.tif",
        "b_classes.tif",
    ]
    single = tmp_path / "single.tif"
    assert geoseg("predict", a, single, "--model", ckpt, "--tile", "64").returncode == 0
    assert np.array_equal(read(single), read(out / "a_classes.tif"))


def test_existing_scheduler_survives_a_killed_worker(tmp_path, make_raster, ckpt, cluster):
    addr, procs = cluster
    src = make_raster(height=640, width=512, name="big.tif")
    ref = tmp_path / "ref.tif"
    assert (
        geoseg("predict", src, ref, "--model", ckpt, "--tile", "64", "--batch-size", "2").returncode
        == 0
    )
    out = tmp_path / "out.tif"
    job = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import cli; cli.main()",
            "predict",
            str(src),
            str(out),
            "--model",
            str(ckpt),
            "--tile",
            "64",
            "--batch-size",
            "2",
            "--scheduler",
            addr,
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)
    still_running = job.poll() is None
    os.killpg(procs[1].pid, signal.SIGKILL)  # one worker dies mid-job
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 0, stderr
    assert still_running, "the job ended before the worker was killed; make the raster bigger"
    assert np.array_equal(read(out), read(ref))


def test_dask_scheduler_address_sends_predict_to_that_cluster(tmp_path, make_raster, ckpt, cluster):
    from distributed import Client

    addr, _ = cluster
    src = make_raster(height=256, width=256, name="env.tif")
    ref, out = tmp_path / "ref.tif", tmp_path / "out.tif"
    assert geoseg("predict", src, ref, "--model", ckpt, "--tile", "64").returncode == 0
    with Client(addr, timeout="30s") as c:
        before = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
        env = dict(os.environ, DASK_SCHEDULER_ADDRESS=addr)
        res = geoseg("predict", src, out, "--model", ckpt, "--tile", "64", env=env)
        after = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert res.returncode == 0, res.stderr
    assert after > before, "the job's tasks never reached the scheduler of DASK_SCHEDULER_ADDRESS"
    assert np.array_equal(read(out), read(ref))


def test_batch_resume_skips_finished_rasters(tmp_path, make_raster, ckpt):
    a = make_raster(height=64, width=64, name="a.tif", seed=1)
    b = make_raster(height=64, width=64, name="b.tif", seed=2)
    out = tmp_path / "out"
    out.mkdir()
    first = geoseg("predict", a, "--output-dir", out, "--model", ckpt, "--tile", "64")
    assert first.returncode == 0, first.stderr
    before = (out / "a_classes.tif").stat().st_mtime_ns
    again = geoseg(
        "predict", a, b, "--output-dir", out, "--model", ckpt, "--tile", "64", "--resume"
    )
    assert again.returncode == 0, again.stderr
    assert "a.tif: already done" in again.stdout and (out / "b_classes.tif").exists()
    assert (out / "a_classes.tif").stat().st_mtime_ns == before


def test_each_worker_loads_the_model_once(tmp_path, make_raster, ckpt, cluster):
    from distributed import Client

    from geoseg.config import PredictConfig
    from geoseg.run.pipeline import predict_file

    addr, _ = cluster
    src = make_raster(height=256, width=256, name="m.tif")
    cfg = PredictConfig(tile=64, batch_size=1, scheduler=addr, device="cpu")
    with Client(addr) as client:
        for i in range(2):
            s = predict_file(src, tmp_path / f"o{i}.tif", ckpt, cfg, client=client)
            assert s.evaluations == s.windows
        loads = client.run(
            lambda: __import__("geoseg.model.engine").model.engine._load_engine.cache_info()
        )
    assert len(loads) == 2
    assert all(info.misses <= 1 for info in loads.values()), loads  # once per process
    assert sum(info.hits for info in loads.values()) > 0
