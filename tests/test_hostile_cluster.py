"""Hostile clusters, signals and config files: what geoseg exposes, waits on and leaves behind.

* Exposure: the clusters geoseg starts listen on loopback only and serve no dashboard unless
  ``--dashboard`` asks for one (sockets listed with psutil, HTTP servers probed).
* ``--workers`` is bounded by the cores; ``--scheduler`` values that are no address, and
  servers that accept and never answer or answer HTTP, fail in seconds with one line (the
  servers run here on 127.0.0.1, the CLI as a subprocess with a timeout, so that a hang fails).
* A task failing mid-run gives one error line, not a second "Exception ignored" traceback.
* SIGINT / SIGTERM stop predict with one ``interrupted`` line, exit 130 / 143, and no
  temporaries left.
* Config files: billion laughs, deep nesting, odd keys, binary and UTF-16, FIFOs, folders,
  huge files and huge numbers are refused with one line naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import distributed  # noqa: F401  (its config defaults must exist before dask.config.set)
import numpy as np
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_geotiff  # noqa: E402
from hostile import REPO, assert_refused, run_cli, run_subprocess, snapshot  # noqa: E402

from geoseg.config import PredictConfig, dashboard_address, load_yaml, merge_layers  # noqa: E402
from geoseg.errors import ClusterError, ConfigError  # noqa: E402
from geoseg.model.engine import available_cores  # noqa: E402

LOOPBACK = {"127.0.0.1", "::1"}
# Paths of the pages a Dask scheduler or worker serves over HTTP.
DASHBOARD_PATHS = ("/status", "/info/main/workers.html", "/metrics", "/health", "/json/counts.json")
# Short connect timeout for the subprocesses that talk to hostile servers.
FAST_CONNECT = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"}


@pytest.fixture
def world(tmp_path, make_raster, ckpt) -> types.SimpleNamespace:
    """A small raster and the checkpoint, under ``tmp_path`` (the snapshot root)."""
    return types.SimpleNamespace(root=tmp_path, src=make_raster(64, 64), ckpt=ckpt)


def listening() -> set[tuple[int, str, int]]:
    """(pid, address, port) of every listening socket of this process and its children."""
    me = psutil.Process()
    out = set()
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for c in proc.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((proc.pid, c.laddr.ip, c.laddr.port))
    return out


def http_status(port: int, path: str) -> int:
    """The HTTP status of GET ``path`` on 127.0.0.1:``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def assert_no_pages(port: int) -> None:
    for path in DASHBOARD_PATHS:
        assert http_status(port, path) == 404, f"port {port} serves {path}"


# --- 1. exposure -------------------------------------------------------------------------


def test_in_process_cluster_listens_on_loopback_and_serves_no_pages():
    from geoseg.run.scheduling import dask_client

    before = listening()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # two at once, as two geoseg runs on one machine: no port is fought over
        with dask_client() as c1, dask_client() as c2:
            new = listening() - before
            servers = [c.cluster.scheduler.http_server.port for c in (c1, c2)]
            servers += [w.http_server.port for c in (c1, c2) for w in c.cluster.workers.values()]
            for port in servers:
                assert_no_pages(port)
    assert new, "expected the HTTP servers' sockets"
    assert {ip for _, ip, _ in new} <= LOOPBACK, new
    assert 8787 not in {port for _, _, port in new}
    assert not [w for w in caught if "already in use" in str(w.message)]


def test_worker_processes_listen_on_loopback_and_serve_no_pages():
    from geoseg.run.scheduling import dask_client

    before = listening()
    with dask_client(workers=1) as c:
        new = listening() - before
        worker_ports = c.run(lambda dask_worker: dask_worker.http_server.port).values()
        for port in [c.cluster.scheduler.http_server.port, *worker_ports]:
            assert_no_pages(port)
        assert all(a.startswith("tcp://127.0.0.1:") for a in c.scheduler_info()["workers"])
    pids = {pid for pid, _, _ in new}
    assert len(pids) == 2, f"expected this process and one worker process: {new}"
    assert {ip for _, ip, _ in new} <= LOOPBACK, new
    assert 8787 not in {port for _, _, port in new}


def test_dashboard_is_served_on_loopback_only_when_asked_for():
    from geoseg.run.scheduling import dashboard_link, dask_client

    before = listening()
    with dask_client(dashboard="127.0.0.1:0") as c:
        new = listening() - before
        port = c.cluster.scheduler.http_server.port
        assert http_status(port, "/health") == 200
        assert dashboard_link(c) == f"http://127.0.0.1:{port}/status"
    assert {ip for _, ip, _ in new} <= LOOPBACK, new


def test_cli_dashboard_prints_the_link(world):
    out = world.root / "out"
    out.mkdir()
    res = run_cli(
        "predict", world.src, "--output-dir", out, "--model", world.ckpt,
        "--dashboard", "127.0.0.1:0", "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "Dask dashboard: http://127.0.0.1:" in res.err
    assert (out / "in_classes.tif").exists()


def test_cli_without_dashboard_prints_no_link(world):
    (world.root / "out").mkdir()
    res = run_cli(
        "predict", world.src, "--output-dir", world.root / "out", "--model", world.ckpt,
        "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "dashboard" not in res.err.lower()


def test_bare_dashboard_flag_means_loopback_8787():
    from geoseg.commands.predict import predict

    ctx = predict.make_context("predict", ["a.tif", "b.tif", "--model", "m", "--dashboard"])
    assert ctx.params["dashboard"] == "127.0.0.1:8787"
    ctx = predict.make_context("predict", ["a", "b", "--model", "m", "--dashboard", "[::1]:0"])
    assert ctx.params["dashboard"] == "[::1]:0"
    assert predict.make_context("predict", ["a", "b", "--model", "m"]).params["dashboard"] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8787", "127.0.0.1:8787"),
        (":0", "127.0.0.1:0"),  # Dask reads ":PORT" as every interface; geoseg as loopback
        ("127.0.0.1:9000", "127.0.0.1:9000"),
        ("0.0.0.0:8787", "0.0.0.0:8787"),  # another interface only when named
        ("[::1]:0", "[::1]:0"),
        ("localhost:8787", "localhost:8787"),
    ],
)
def test_dashboard_addresses(value, expected):
    assert dashboard_address(value) == expected


@pytest.mark.parametrize("value", ["x y:1", "127.0.0.1:99999", "host:port", "", "http://h:1"])
def test_bad_dashboard_address_is_refused(world, value):
    before = snapshot(world.root)
    res = run_cli(
        "predict", world.src, world.root / "o.tif", "--model", world.ckpt, "--dashboard", value
    )
    assert_refused(res, before, snapshot(world.root), "--dashboard", "HOST:PORT")


# --- 3. workers and scheduler --------------------------------------------------------------


@pytest.mark.parametrize("count", [1000, 10**12, 0, -3])
def test_worker_counts_are_bounded(world, count):
    before = snapshot(world.root)
    res = run_cli(
        "predict", world.src, world.root / "o.tif", "--model", world.ckpt, "--workers", count
    )
    words = ["--workers", str(count)] + ([str(available_cores())] if count > 0 else [])
    assert_refused(res, before, snapshot(world.root), *words)


@pytest.mark.parametrize("count", [available_cores() + 1, 0, -1])
def test_dask_client_bounds_workers_for_every_caller(count):
    from geoseg.run.scheduling import dask_client

    # evaluate's local cluster goes through the same function
    with pytest.raises(ConfigError, match="^workers "), dask_client(count):
        pass


@pytest.mark.parametrize(
    "address",
    ["not a url", "http://127.0.0.1:8787", "tcp://127.0.0.1:99999", "tcp://127.0.0.1", "tcp://:1"],
)
def test_scheduler_that_is_no_address_is_refused(world, address):
    before = snapshot(world.root)
    res = run_cli(
        "predict", world.src, world.root / "o.tif", "--model", world.ckpt, "--scheduler", address
    )
    assert_refused(res, before, snapshot(world.root), "--scheduler", "tcp://HOST:8786")


@pytest.mark.parametrize("address", ["not a url", "http://127.0.0.1:8787"])
def test_dask_scheduler_address_that_is_no_address_is_refused_by_name(world, address):
    import dask

    before = snapshot(world.root)
    with dask.config.set({"scheduler-address": address}):
        res = run_cli("predict", world.src, world.root / "o.tif", "--model", world.ckpt)
    assert_refused(res, before, snapshot(world.root), "DASK_SCHEDULER_ADDRESS", "unset it")


def test_dask_scheduler_address_is_the_default_scheduler_and_workers_override_it(world):
    import dask

    before = snapshot(world.root)
    with closed_port() as port, dask.config.set({"scheduler-address": f"tcp://127.0.0.1:{port}"}):
        res = run_cli("predict", world.src, world.root / "o.tif", "--model", world.ckpt)
        assert_refused(res, before, snapshot(world.root), "cannot connect", str(port))
        local = run_cli(
            "predict", world.src, world.root / "o.tif", "--model", world.ckpt, "--workers", "1"
        )
    assert local.code == 0, local.err
    assert (world.root / "o.tif").exists()
    (world.root / "o.tif").unlink()
    for aux in world.root.glob("o.tif*"):
        aux.unlink()


@contextlib.contextmanager
def closed_port():
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


@contextlib.contextmanager
def hostile_server(answer: bytes | None, close: bool = False):
    """A TCP server on 127.0.0.1 that accepts and then never answers, answers ``answer``, or
    closes at once; stopped (and its connections closed) on exit. Yields the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop, conns = threading.Event(), []

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conns.append(conn)
            with contextlib.suppress(OSError):
                if close:
                    conn.close()
                elif answer is not None:
                    conn.settimeout(2)
                    conn.recv(4096)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in conns:
            conn.close()
        srv.close()


HTTP_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>"
)


@pytest.mark.parametrize(("answer", "reason"), [(None, "answered"), (HTTP_ANSWER, "protocol")])
def test_scheduler_that_never_answers_or_speaks_http_fails_in_seconds(world, answer, reason):
    with hostile_server(answer) as port:
        t0 = time.monotonic()
        res = run_subprocess(
            "predict", world.src, world.root / "o.tif", "--model", world.ckpt,
            "--scheduler", f"tcp://127.0.0.1:{port}", "--no-progress",
            timeout=90, env={**os.environ, **FAST_CONNECT},
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    assert res.code == 1, res.err
    assert "Traceback" not in res.err, res.err
    assert len(res.error_lines) == 1, res.err
    assert "cannot connect" in res.err and reason in res.err
    assert elapsed < 30, f"took {elapsed:.0f} s"
    assert not (world.root / "o.tif").exists()


def test_scheduler_that_closes_or_refuses_is_one_line(world):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with hostile_server(None, close=True) as port:
            before = snapshot(world.root)
            res = run_cli(
                "predict", world.src, world.root / "o.tif", "--model", world.ckpt,
                "--scheduler", f"tcp://127.0.0.1:{port}",
            )  # fmt: skip
            assert_refused(res, before, snapshot(world.root), "cannot connect", str(port))
        # the port is closed now: the connection is refused, retried for 2 s
        res = run_cli(
            "predict", world.src, world.root / "o.tif", "--model", world.ckpt,
            "--scheduler", f"127.0.0.1:{port}",
        )  # fmt: skip
        assert_refused(res, before, snapshot(world.root), "cannot connect", "within 2 s")


@pytest.fixture
def tls_scheduler(tmp_path):
    """A real `dask scheduler` on tls://127.0.0.1 with a throwaway self-signed certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dask_cli = str(Path(sys.executable).parent / "dask")
    proc = subprocess.Popen(
        [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--protocol", "tls",
         "--tls-ca-file", cert, "--tls-cert", cert, "--tls-key", key, "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                break
            time.sleep(0.1)
        yield types.SimpleNamespace(address=f"tls://127.0.0.1:{port}", cert=cert, key=key)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_tls_scheduler_is_reached_with_the_tls_settings_of_dask_config(tls_scheduler):
    """What the README promises: Client(address) takes distributed.comm.tls.* from the config."""
    import dask

    from geoseg.run.scheduling import dask_client

    tls = {
        "distributed.comm.tls.ca-file": str(tls_scheduler.cert),
        "distributed.comm.tls.client.cert": str(tls_scheduler.cert),
        "distributed.comm.tls.client.key": str(tls_scheduler.key),
    }
    with dask.config.set(tls), dask_client(scheduler=tls_scheduler.address) as c:
        assert c.scheduler.address == tls_scheduler.address
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        with pytest.raises(ClusterError, match="no TLS settings"):
            with dask_client(scheduler=tls_scheduler.address):
                pass
        plain = tls_scheduler.address.replace("tls://", "tcp://")
        with pytest.raises(ClusterError, match="cannot connect"), dask_client(scheduler=plain):
            pass


def test_connect_timeout_defaults_to_ten_seconds_and_follows_dask_config():
    import dask

    from geoseg.run.scheduling import connect_timeout

    with dask.config.set({"distributed.comm.timeouts.connect": "30s"}):
        assert connect_timeout() == 10.0  # distributed's default: geoseg's own bound
    with dask.config.set({"distributed.comm.timeouts.connect": "45s"}):
        assert connect_timeout() == 45.0


# --- 4. a task failing mid-run -------------------------------------------------------------


def test_unfinished_results_generator_is_quiet_after_the_client_closed(monkeypatch):
    """The generator's clean-up ran after the client had closed: "IOLoop is closed"."""
    import geoseg.run.scheduling as sch
    from geoseg.core.plan import make_plan

    def slow_task(source, grid, strip, batches, blend, finish, spec, later):
        time.sleep(0.2)
        return types.SimpleNamespace(interior=strip.index, counts=1, top=None, bottom=None)

    monkeypatch.setattr(sch, "run_strip_task", slow_task)
    plan = make_plan(40 * 64, 64, tile=64, overlap=0, batch_size=1, strip_rows=1)
    caught = []
    monkeypatch.setattr(sys, "unraisablehook", caught.append)
    with sch.dask_client() as client:
        results = sch.strip_pieces(client, None, plan, None, None, 4)
        assert next(results) == (0, 1)
    del results  # left unfinished, as a failure in the writer leaves it
    gc.collect()
    assert not caught, [(u.exc_value, u.object) for u in caught]


def corrupt_middle_tile(path: Path, row: int, col: int) -> None:
    """Overwrite one compressed tile with garbage: its windows fail to read, the rest work."""
    import rasterio

    with rasterio.open(path) as src:
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)


@pytest.mark.parametrize(
    ("name", "extra"),
    [("out.tif", []), ("out.zarr", ["--workers", "2"])],  # Zarr: chunks written by workers
)
def test_mid_run_read_failure_is_one_error_line(tmp_path, ckpt, name, extra):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 512, 512), dtype=np.uint8)
    src = write_geotiff(
        tmp_path / "in.tif", data, compress="deflate", tiled=True, blockxsize=64, blockysize=64
    )
    corrupt_middle_tile(src, row=4, col=3)  # the first and last pixel (the probe) still read
    out = tmp_path / name
    before = sorted(p.name for p in tmp_path.iterdir())
    res = run_subprocess(
        "predict", src, out, "--model", ckpt, "--no-progress", "--device", "cpu", *extra
    )
    assert res.code == 1, res.err
    assert "Traceback" not in res.err and "Exception ignored" not in res.err, res.err
    assert len(res.error_lines) == 1, res.err
    assert "cannot read window" in res.err and "in.tif" in res.err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary store left


# --- 5. signals -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_raster(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (3, 1024, 1024), dtype=np.uint8)
    return write_geotiff(tmp_path_factory.mktemp("big") / "big.tif", data)


def interrupt_predict(src, out, ckpt, signum, started, *extra) -> tuple[int, str]:
    """Run predict, send ``signum`` once ``started()`` holds; return exit status and stderr."""
    # Ctrl-C as in an interactive shell: a background job (CI under `nohup ... &`) inherits an
    # ignored SIGINT, which geoseg rightly leaves ignored.
    child = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); " + (
        "import cli; cli.main()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, "predict", str(src), str(out),
         "--model", str(ckpt), "--tile", "64", "--no-progress", "--device", "cpu", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not started() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"predict ended before the signal:\n{proc.stderr.read()}"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or "partial" in p.name)


def chunks_written(folder: Path) -> bool:
    """Whether a Zarr writer's temporary in ``folder`` holds a written chunk of classes."""
    return any(folder.glob(".*.tmp/store.zarr/classes/[0-9]*"))  # Zarr v2 keys: classes/0.0


def assert_interrupted_cleanly(status, err, code, folder, out) -> None:
    assert status == code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and "interrupted" in lines[0], err
    assert "no output was written" in lines[0]
    assert not leftovers(folder) and not out.exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_zarr_write_cleans_up(tmp_path, big_raster, ckpt, signum, code):
    out = tmp_path / "out.zarr"
    started = functools.partial(chunks_written, tmp_path)
    status, err = interrupt_predict(big_raster, out, ckpt, signum, started, "--block-size", "256")
    assert_interrupted_cleanly(status, err, code, tmp_path, out)


def test_sigterm_while_the_zarr_store_is_created_cleans_up(tmp_path, big_raster, ckpt):
    out = tmp_path / "out.zarr"
    started = functools.partial(leftovers, tmp_path)
    status, err = interrupt_predict(big_raster, out, ckpt, signal.SIGTERM, started)
    assert_interrupted_cleanly(status, err, 143, tmp_path, out)


def test_sigterm_after_committed_rows_says_resume(tmp_path, big_raster, ckpt):
    from geoseg.run.resume import partial_dir

    out = tmp_path / "out.tif"
    progress = partial_dir(out) / "progress.json"
    status, err = interrupt_predict(
        big_raster, out, ckpt, signal.SIGTERM, progress.exists, "--block-size", "256"
    )
    assert status == 143, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0], err
    assert "continue with --resume" in lines[0]
    assert progress.exists() and not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["predict", "a.tif", "b.zarr"], "no output was written"),
        (["predict", "a.tif", "--output-dir", "d"], "finished rasters are kept"),
        (["predict", "a.tif", "--output-dir=d"], "continue with --resume"),
        (["train", "--out", "r", "--resume"], "continue with --resume"),
        (["train", "--out", "r"], "no output was written"),
        (["tiles", ""], "no output was written"),
    ],
)
def test_interrupt_messages(args, words):
    import cli

    message, code = cli.interrupted(args, KeyboardInterrupt())
    assert message.startswith("Error: interrupted;") and words in message
    assert code == 130
    message, code = cli.interrupted(args, cli.Terminated(signal.SIGHUP))
    assert "interrupted by SIGHUP" in message and code == 129


def test_termination_handler_is_installed_and_restored_and_keeps_ignored_signals():
    import cli

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with cli.termination_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is cli._on_signal
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGTERM)
                time.sleep(1)  # the handler runs between bytecodes
            # after the first, a second SIGTERM is ignored until the cleanup is done
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_signal_during_a_gc_callback_is_delivered_after_it(monkeypatch):
    """Raised inside a gc callback, the exception would be lost ("Exception ignored")."""
    import cli

    fired, lost = [], []
    monkeypatch.setattr(sys, "unraisablehook", lost.append)

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGTERM)  # handled right here, inside the callback

    gc.callbacks.append(callback)
    try:
        with cli.termination_as_interrupt(), pytest.raises(cli.Terminated):
            gc.collect()
            time.sleep(5)  # the signal comes again after the callback
    finally:
        gc.callbacks.remove(callback)
    assert fired and not lost, lost


# --- 6. config files -----------------------------------------------------------------------


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("tile: *i")
    return "\n".join(lines) + "\n"


CONFIGS = {
    "laughs": (billion_laughs(), ["alias"]),
    "deep": ("tile: " + "[" * 10000 + "]" * 10000 + "\n", ["deeper than 32"]),
    "deep_map": ("".join(f"{' ' * i}k{i}:\n" for i in range(40)) + " " * 40 + "x: 1\n", ["32"]),
    "int_key": ("1: 2\n", ["key '1'", "not text"]),
    "list_key": ("[a]: b\n", ["key a list", "not text"]),
    "null_key": ("null: x\n", ["key 'null'"]),
    "map_key": ("? {a: 1}\n: b\n", ["key a mapping"]),
    "nested_int_key": ("tile: {1: 2}\n", ["key '1'"]),
    "top_list": ("- tile\n- 64\n", ["holds a list", "mapping"]),
    "top_scalar": ("tile\n", ["holds a str", "mapping"]),
    "python_tag": ("tile: !!python/object/apply:os.system [echo hi]\n", ["not valid YAML"]),
    "long_int": ("tile: " + "9" * 5000 + "\n", ["cannot be read"]),
    "bad_date": ("tile: 2024-13-45\n", ["cannot be read"]),
    "huge_tile": ("tile: 1000000000000000000000000000000\n", ["tile 1000", "65536"]),
    "huge_block": ("block_size: 99999999\n", ["block_size 99999999", "65536"]),
    "huge_batch": ("batch_size: 100000\n", ["batch_size 100000", "4096"]),
    "huge_prefetch": ("prefetch: 1000\n", ["prefetch 1000", "64"]),
    "negative_overlap": ("overlap: -5\n", ["overlap -5"]),
    "bool_tile": ("tile: true\n", ["tile", "int"]),
    "float_tile": ("tile: .inf\n", ["tile", "inf"]),
    "band_zero": ("bands: [0]\n", ["bands", "1 to"]),
    "no_bands": ("bands: []\n", ["bands"]),
    "long_string": ("blend: " + "x" * 200_000 + "\n", ["blend", "one of"]),
    "bad_scheduler": ("scheduler: 'not a url'\n", ["scheduler 'not a url'", "tcp://HOST"]),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hostile_config_text_is_refused_in_one_line(world, name):
    text, words = CONFIGS[name]
    cfg = world.root / f"{name}.yaml"
    cfg.write_text(text)
    before = snapshot(world.root)
    t0 = time.monotonic()
    res = run_cli(
        "predict", world.src, world.root / "o.tif", "--model", world.ckpt, "--config", cfg
    )
    assert time.monotonic() - t0 < 10
    assert_refused(res, before, snapshot(world.root), *words)
    assert len(res.err) < 600, "the error line is not bounded"


CONFIG_BYTES = {
    "utf16": ("tile: 64\n".encode("utf-16"), ["expected UTF-8 YAML"]),
    "utf16_no_bom": ("tile: 64\n".encode("utf-16-le"), ["expected UTF-8 YAML"]),
    "binary": (bytes(range(256)) * 8, ["expected UTF-8 YAML"]),
    "nul": (b"tile: 64\x00\n", ["expected UTF-8 YAML"]),
    "latin1": ("blend: caf\xe9\n".encode("latin-1"), ["not UTF-8", "expected UTF-8 YAML"]),
    "too_big": (b"# " + b"x" * (2**20) + b"\ntile: 64\n", ["larger than 1 MiB"]),
}


@pytest.mark.parametrize("name", sorted(CONFIG_BYTES))
def test_config_that_is_not_utf8_yaml_is_refused(world, name):
    data, words = CONFIG_BYTES[name]
    cfg = world.root / f"{name}.yaml"
    cfg.write_bytes(data)
    before = snapshot(world.root)
    res = run_cli(
        "predict", world.src, world.root / "o.tif", "--model", world.ckpt, "--config", cfg
    )
    assert_refused(res, before, snapshot(world.root), cfg.name, *words)


def test_utf8_bom_and_empty_configs_are_accepted(tmp_path):
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbftile: 64\n")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert load_yaml(tmp_path / "bom.yaml") == {"tile": 64}
    assert load_yaml(tmp_path / "empty.yaml") == {}
    repo_config = load_yaml(REPO / "configs" / "predict.yaml")
    assert PredictConfig(**{k: v for k, v in repo_config.items() if v is not None})


def test_config_that_is_a_folder_or_missing_is_refused(world):
    (world.root / "dir.yaml").mkdir()
    before = snapshot(world.root)
    for name, words in (("dir.yaml", ["is a directory"]), ("nope.yaml", ["does not exist"])):
        res = run_cli(
            "predict", world.src, world.root / "o.tif", "--model", world.ckpt,
            "--config", world.root / name,
        )  # fmt: skip
        assert_refused(res, before, snapshot(world.root), name, *words)


def test_config_that_is_a_fifo_is_refused_without_hanging(world):
    fifo = world.root / "fifo.yaml"
    os.mkfifo(fifo)
    res = run_subprocess(
        "predict", world.src, world.root / "o.tif", "--model", world.ckpt, "--config", fifo,
        timeout=60,
    )  # fmt: skip
    assert res.code == 1 and "Traceback" not in res.err, res.err
    assert len(res.error_lines) == 1 and "not a regular file" in res.err, res.err


def test_train_and_evaluate_configs_are_bounded_too(world):
    cfg = world.root / "laughs.yaml"
    cfg.write_text(billion_laughs())
    before = snapshot(world.root)
    res = run_cli("train", "--config", cfg, "--out", world.root / "run")
    assert_refused(res, before, snapshot(world.root), "laughs.yaml", "alias")
    data = world.root / "data"
    data.mkdir()
    before = snapshot(world.root)
    res = run_cli("evaluate", "--dataset", f"folder:{data}", "--config", cfg, "--model", world.ckpt)
    assert_refused(res, before, snapshot(world.root), "laughs.yaml", "alias")


def test_huge_tile_flag_is_one_line(world):
    before = snapshot(world.root)
    res = run_cli(
        "predict", world.src, world.root / "o.tif", "--model", world.ckpt,
        "--tile", "99999999999999999999999",
    )  # fmt: skip
    assert_refused(res, before, snapshot(world.root), "--tile", "65536")


def test_option_layers_with_non_text_keys_are_refused():
    with pytest.raises(ConfigError, match="not text"):
        merge_layers(PredictConfig, ({1: 2},))
