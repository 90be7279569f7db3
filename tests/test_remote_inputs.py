"""GDAL paths as inputs: /vsizip/ and zip:// archives, a COG over HTTP (/vsicurl/ and http://).

The HTTP server runs in its own process: rasterio holds the GIL while GDAL opens a file, so
a server thread in the test process could never answer GDAL's first request.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import rasterio
from hostile import run_cli, snapshot

from geoseg.config import PredictConfig
from geoseg.errors import ConfigError
from geoseg.io import files
from geoseg.io.raster import (
    gdal_base,
    gdal_identity,
    gdal_local_file,
    is_gdal_url,
    open_raster,
    raster_files,
)

# A threaded HTTP server with HEAD and single byte ranges (http.server's own handler has no
# Range support, which GDAL's /vsicurl/ needs), an ETag and Last-Modified; prints its port.
SERVER = r"""
import email.utils, http.server, re, sys, threading
from pathlib import Path

ROOT = Path(sys.argv[1])
VERSION_HEADERS = sys.argv[2] == "1"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _file(self):
        p = ROOT / self.path.split("?")[0].lstrip("/")
        return p if p.is_file() else None

    def _headers(self, p, status, length, extra=()):
        st = p.stat()
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if VERSION_HEADERS:
            self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        for key, value in extra:
            self.send_header(key, value)
        self.end_headers()

    def do_HEAD(self):
        p = self._file()
        if p is None:
            self.send_error(404)
            return
        self._headers(p, 200, p.stat().st_size)

    def do_GET(self):
        p = self._file()
        if p is None:
            self.send_error(404)
            return
        data = p.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if not m:
            self._headers(p, 200, len(data))
            self.wfile.write(data)
            return
        a = int(m[1])
        b = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
        if a >= len(data):
            self.send_error(416)
            return
        self._headers(p, 206, b - a + 1, [("Content-Range", f"bytes {a}-{b}/{len(data)}")])
        self.wfile.write(data[a : b + 1])


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Timer(600, server.shutdown).start()  # never outlives a hung test run
server.serve_forever()
"""


def serve(root, version_headers=True):
    """Start the server on ``root`` in a subprocess; return (process, base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(root), "1" if version_headers else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    """A small COG (a crop of RGB.byte.tif) served over HTTP, and its local copy."""
    root = tmp_path_factory.mktemp("www")
    with rasterio.open(shared_data / "rasters" / "RGB.byte.tif") as src:
        data = src.read(window=((200, 360), (250, 390)))
        prof = src.profile
    prof.update(
        driver="COG", height=data.shape[1], width=data.shape[2], blocksize=64, compress="deflate"
    )
    prof.pop("blockxsize", None), prof.pop("blockysize", None), prof.pop("tiled", None)
    prof.pop("interleave", None)
    with rasterio.open(root / "x.tif", "w", **prof) as dst:
        dst.write(data)
    proc, url = serve(root)
    yield root / "x.tif", url
    proc.kill()
    proc.wait()


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile


def test_is_gdal_url_and_what_it_reads(tmp_path):
    for url in ("/vsicurl/https://h/x.tif", "https://h/x.tif?a=1", "s3://b/k.tif", "zip://a.zip!x"):
        assert is_gdal_url(url)
    for local in ("x.tif", "/data/x.tif", "C:\\x.tif", "file:///x.tif", "weird://x"):
        assert not is_gdal_url(local)
    assert gdal_base("/vsizip//d/a.zip/in/x.tif") == ("local", "/d/a.zip")
    assert gdal_base("zip:///d/a.zip!x.tif") == ("local", "/d/a.zip")
    assert gdal_base("/vsizip/{/d/a b.zip}/x.tif") == ("local", "/d/a b.zip")
    assert gdal_base("https://h/x.tif") == ("network", "/vsicurl/https://h/x.tif")
    assert gdal_base("/vsizip//vsis3/b/a.zip/x.tif") == ("network", "/vsis3/b/a.zip")
    assert gdal_base("/vsimem/x.tif")[0] == "other"
    assert gdal_local_file("/vsis3/b/x.tif") is None
    assert raster_files("/vsicurl/https://h/x.tif") == ["/vsicurl/https://h/x.tif"]


def test_vsizip_and_zip_url_read_like_the_file(tmp_path, make_raster, ckpt):
    src = make_raster(height=90, width=70, bands=3)
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(src, "inner/scene.tif")
    local = open_raster(src).read(0, 0, 90, 70)
    for path in (f"/vsizip/{archive}/inner/scene.tif", f"zip://{archive}!inner/scene.tif"):
        with open_raster(path) as source:
            data, valid = source.read(0, 0, 90, 70)
        np.testing.assert_array_equal(data, local[0])
        np.testing.assert_array_equal(valid, local[1])
        assert gdal_local_file(path) == str(archive)
        assert gdal_identity(path) == [archive.stat().st_size, archive.stat().st_mtime_ns]
    want = tmp_path / "local.tif"
    assert run_cli("predict", src, want, "--model", ckpt, "--device", "cpu").code == 0
    out = tmp_path / "zipped.tif"
    res = run_cli("predict", f"zip://{archive}!inner/scene.tif", out, "--model", ckpt)
    assert res.code == 0, res.err
    np.testing.assert_array_equal(_read(out)[0], _read(want)[0])


def test_an_output_may_not_replace_the_archive_of_an_input(tmp_path, make_raster, ckpt):
    src = make_raster(height=40, width=40, bands=3)
    archive = tmp_path / "a.tif"  # the archive has a .tif name: the output would replace it
    with zipfile.ZipFile(archive.with_suffix(".zip"), "w") as zf:
        zf.write(src, "x.tif")
    (tmp_path / "a.zip").rename(archive)
    before = snapshot(tmp_path)
    res = run_cli("predict", f"/vsizip/{{{archive}}}/x.tif", archive, "--model", ckpt)
    assert res.code != 0 and "would overwrite the input" in res.err, res.err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("form", ["/vsicurl/{url}", "{url}"])
def test_predict_a_cog_over_http_equals_the_local_file(tmp_path, served, ckpt, form):
    local, base = served
    url = form.format(url=f"{base}/x.tif")
    want = tmp_path / "local.tif"
    assert run_cli("predict", local, want, "--model", ckpt, "--device", "cpu").code == 0
    out = tmp_path / "remote.tif"
    res = run_cli("predict", url, out, "--model", ckpt, "--device", "cpu")
    assert res.code == 0, res.err
    got, prof = _read(out)
    ref, ref_prof = _read(want)
    np.testing.assert_array_equal(got, ref)
    assert prof["transform"] == ref_prof["transform"] and prof["crs"] == ref_prof["crs"]


def test_a_missing_url_is_one_line_and_writes_nothing(tmp_path, served, ckpt):
    _, base = served
    before = snapshot(tmp_path)
    res = run_cli("predict", f"/vsicurl/{base}/missing.tif", tmp_path / "o.tif", "--model", ckpt)
    assert res.code != 0
    assert "Traceback" not in res.err
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert "missing.tif" in lines[0] and "404" in lines[0], lines[0]
    assert snapshot(tmp_path) == before


def test_remote_identity_is_what_gdal_reports(served):
    local, base = served
    ident = gdal_identity(f"{base}/x.tif")
    assert ident is not None and ident[0] == str(local.stat().st_size)
    stamp = files.stamps([f"/vsicurl/{base}/x.tif"])
    assert stamp[0][1] == "gdal" and stamp[0][2] == ident
    assert files.unverified(stamp) == []


def test_resume_refuses_a_url_without_etag_or_date(tmp_path, served, ckpt):
    from geoseg.run.pipeline import predict_file

    local, _ = served
    proc, base = serve(local.parent, version_headers=False)
    try:
        url = f"/vsicurl/{base}/x.tif"
        assert files.unverified(files.stamps([url])) == [url]
        cfg = PredictConfig(device="cpu")
        with pytest.raises(ConfigError, match="cannot check that .* is unchanged"):
            predict_file(url, tmp_path / "o.tif", ckpt, cfg, resume=True)
    finally:
        proc.kill()
        proc.wait()


def test_batch_takes_urls_as_they_are(served):
    from geoseg.run.batch import expand_inputs, output_name

    _, base = served
    url = f"/vsicurl/{base}/x.tif?token=a*b"
    assert expand_inputs([url]) == [url]
    assert output_name(url, "{stem}_classes.tif") == "x_classes.tif"
    assert output_name("zip:///d/a.zip!in/y.tif", "{stem}.tif") == "y.tif"


def test_gdal_settings_default_only_where_unset(monkeypatch):
    from geoseg.io import gdal

    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "7")
    monkeypatch.delenv("GDAL_HTTP_RETRY_DELAY", raising=False)
    monkeypatch.delenv("GDAL_DISABLE_READDIR_ON_OPEN", raising=False)
    gdal.apply_gdal_defaults()
    import os

    assert os.environ["GDAL_HTTP_MAX_RETRY"] == "7"
    assert os.environ["GDAL_HTTP_RETRY_DELAY"] == gdal.GDAL_DEFAULTS["GDAL_HTTP_RETRY_DELAY"]
    assert gdal.remote_open_options() == {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "FALSE")
    assert gdal.remote_open_options() == {"GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"}


def test_a_pickled_remote_source_carries_identity_and_settings(served, monkeypatch):
    import pickle

    _, base = served
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "5")
    source = open_raster(f"/vsicurl/{base}/x.tif")
    state = source.__getstate__()
    assert state["identity"][0] == "gdal" and len(state["identity"]) > 1
    assert state["gdal"]["GDAL_HTTP_MAX_RETRY"] == "5"
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy.read(0, 0, 16, 16)[0], source.read(0, 0, 16, 16)[0])
    source.close()


def test_a_worker_process_gets_the_settings_of_the_opening_process(served, monkeypatch):
    import os
    import pickle

    _, base = served
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "6")
    blob = pickle.dumps(open_raster(f"/vsicurl/{base}/x.tif"))
    code = (
        "import os, pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); "
        "print(os.environ.get('GDAL_HTTP_MAX_RETRY'), s.read(0, 0, 4, 4)[0].shape)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GDAL_", "CPL_"))}
    proc = subprocess.run(
        [sys.executable, "-c", code], input=blob, capture_output=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split()[0] == "6"
