"""Benchmark `geoseg predict`'s pipeline without the model's cost: its ceiling and client cost.

The model is replaced by a zero-cost stand-in (:class:`StandInEngine`: ``predict_proba``
returns a fixed, precomputed float32 probability array per batch shape), installed in this
process and, with ``client.run``, in worker processes. Prints two tables (see the README):

1. Pipeline ceiling, at each of ``--sizes`` (alternating, best of ``--repeat``): end-to-end
   ``predict_file`` (in-process cluster, the default); GDAL windowed reads (rasterio, one
   thread) of exactly the windows predict reads; MONAI's ``sliding_window_inference`` on the
   whole raster read into memory (a fresh process each: its time includes the read, and its
   peak RSS), driven by the same stand-in. Mpx/s of output, and the marginal rate between
   consecutive sizes ((px_b - px_a) / (t_b - t_a)), which leaves fixed costs out.
   Below it, the minor page faults and system CPU seconds of predict's fastest run (its
   worker threads run in this process): memory handed back to the OS and faulted in again.
2. Client cost with ``--workers 2`` (a local cluster of 2 worker processes): the client
   process's CPU seconds per output Mpx and its share of all CPU (client + workers), and the
   bytes the client process received per output pixel. The client process also runs the
   ``LocalCluster``'s scheduler (and the nannies' supervision): its CPU includes theirs.

Bytes to the client: the sum, over the workers' ``transfer_outgoing_log`` entries of the run,
of ``compressed``, the byte count that ``Worker.get_data``'s ``comm.write`` returns (the frames
written on the wire; ``distributed.comm.compression`` is off by default, so it is the raw
size). The entries' ``total`` is not used: it sums ``dask.sizeof`` estimates, which see only
the arrays geoseg registers (``geoseg.run.scheduling.register_sizes``). The client of a
local cluster fetches from the workers directly (``direct_to_workers``): these bytes enter
the client process once. Printed beside it as a cross-check: the payload that
per-window results hold, windows x tile^2 x (4 B per class probability + 1 B valid mask);
a pipeline that blends on the workers sends less than that. (The
client's ``/proc/self/io`` ``rchar`` is no such counter: Linux counts ``read`` calls there,
not the ``recv`` calls that Tornado's sockets use.)

The rasters are bench_predict's mosaics (Dubai aerial images on a local pixel grid, or noise).
Usage::

    python benchmarks/bench_pipeline.py [--sizes 4096,8192] [--repeat 3]
        [--skip monai,gdal,workers] [--model models/dubai-demo] [--input tif|zarr]

With ``--input zarr`` predict reads Zarr copies of the mosaics (chunks of 512 px, the
GeoTIFFs' blocks); the GDAL and MONAI columns still read the GeoTIFFs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench_predict import REPO, _tiles_source, make_mosaic, model_tile  # noqa: E402

from geoseg.run.pipeline import auto_batch_size, default_overlap, peak_rss_bytes  # noqa: E402

# The stand-in's class map: a checkerboard of CELL px squares cycling through the classes.
CELL = 32
WINNER_P = 0.6


def fixed_probs(batch: int, classes: int, h: int, w: int) -> np.ndarray:
    """(batch, classes, h, w) float32 probabilities summing to 1; the winner varies in space.

    The winning class (probability 0.6, the rest share 0.4) cycles over CELL px squares, so
    that the class map is not constant.
    """
    rows, cols = np.indices((h, w))
    winner = (rows // CELL + cols // CELL) % classes
    rest = (1.0 - WINNER_P) / max(1, classes - 1)
    probs = np.where(np.arange(classes)[:, None, None] == winner, WINNER_P, rest)
    return np.broadcast_to(probs.astype(np.float32), (batch, classes, h, w)).copy()


class StandInEngine:
    """A zero-cost engine: the attributes the pipeline uses, fixed probabilities per shape.

    ``predict_proba`` returns one cached read-only array per batch shape (a pipeline that
    wrote into it would fail loudly instead of corrupting the next batches).
    """

    def __init__(self, meta, device: str = "cpu") -> None:
        self.meta = meta
        self.device = "cuda" if device == "cuda" else "cpu"
        self.precision, self.tta, self.threads = "fp32", "none", None
        self.stride = 32  # the demo model's encoder stride: tiles of 256 need no padding
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def max_concurrent_calls(self) -> int:
        return 1 << 10

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        b, _, h, w = batch.shape
        probs = self._cache.get((b, h, w))
        if probs is None:
            probs = fixed_probs(b, self.meta.classes, h, w)
            probs.setflags(write=False)
            self._cache[(b, h, w)] = probs
        return probs


def install_stand_in() -> int:
    """Make ``cached_engine`` return stand-ins, in every geoseg module that holds it.

    Run in this process and, with ``client.run``, on worker processes (cloudpickle sends this
    function and the classes it uses by value, as they live in ``__main__``). Returns the
    number of module attributes patched.
    """
    import importlib

    import geoseg.model.engine as engine

    for name in ("geoseg.run.pipeline", "geoseg.run.scheduling", "geoseg.run.arrays"):
        importlib.import_module(name)
    original = getattr(engine, "_bench_original_cached_engine", engine.cached_engine)
    engine._bench_original_cached_engine = original
    engines: dict = {}

    def stand_in(spec):
        if spec not in engines:
            from geoseg.model.checkpoint import read_meta

            engines[spec] = StandInEngine(read_meta(spec.checkpoint), spec.device)
        return engines[spec]

    stand_in.bench_stand_in = True
    patched = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("geoseg") or module is None:
            continue
        held = getattr(module, "cached_engine", None)
        if held is original or getattr(held, "bench_stand_in", False):
            module.cached_engine = stand_in
            patched += 1
    return patched


def zarr_copy(tif: Path, store: Path) -> Path:
    """A Zarr copy of a mosaic: one ``(band, y, x)`` array in chunks of its 512 px blocks."""
    import rasterio
    import xarray as xr

    with rasterio.open(tif) as ds:
        data = ds.read()
    image = xr.DataArray(data, dims=("band", "y", "x"), name="image")
    encoding = {"image": {"chunks": (data.shape[0], 512, 512)}}
    image.to_dataset().to_zarr(store, encoding=encoding, mode="w")
    return store


def geoseg_dir() -> str:
    """Where this process imports geoseg from (the checkout measured)."""
    import geoseg

    return str(Path(geoseg.__file__).parent)


def best_of(times: dict, key, seconds: float) -> None:
    """Keep the smallest of the times recorded under ``key``."""
    times[key] = min(seconds, times.get(key, float("inf")))


def time_predict(src: Path, out: Path, model: Path, client=None) -> float:
    """Seconds of one end-to-end ``predict_file`` (default settings on the CPU)."""
    from geoseg.config import PredictConfig
    from geoseg.run.pipeline import predict_file

    t0 = time.perf_counter()
    predict_file(src, out, model, PredictConfig(device="cpu"), overwrite=True, client=client)
    return time.perf_counter() - t0


def predict_grid(size: int, model: Path):
    """The window grid predict plans for a size x size raster (the model's tile, defaults)."""
    from geoseg.core.plan import make_plan

    tile = model_tile(model)
    plan = make_plan(
        size,
        size,
        tile=tile,
        overlap=default_overlap(None, tile),
        batch_size=auto_batch_size("cpu", tile),
    )
    return plan.grid


def time_gdal(src: Path, grid) -> float:
    """Seconds to read every window of ``grid`` from ``src`` with rasterio, one thread."""
    import rasterio
    from rasterio.windows import Window

    t0 = time.perf_counter()
    with rasterio.open(src) as ds:
        for win in grid:
            ds.read(window=Window(win.col, win.row, win.width, win.height))
    return time.perf_counter() - t0


def monai_run(src: str, tile: str, overlap: str, batch: str, classes: str) -> dict:
    """MONAI's sliding window over the whole raster in memory, the stand-in as predictor.

    Run in a fresh process (see :func:`time_monai`); the time includes reading the raster
    and the argmax to a uint8 class map, after one warm-up call on a 2 x 2 tile image (MONAI
    imports and builds things on its first call).
    """
    import rasterio
    import torch
    from monai.inferers import sliding_window_inference

    tile, overlap, batch, classes = int(tile), int(overlap), int(batch), int(classes)
    fixed: dict = {}

    def predictor(x):
        key = tuple(x.shape)
        if key not in fixed:
            fixed[key] = torch.from_numpy(fixed_probs(key[0], classes, *key[2:]))
        return fixed[key]

    def run(img):
        with torch.inference_mode():
            prob = sliding_window_inference(
                img,
                roi_size=(tile, tile),
                sw_batch_size=batch,
                predictor=predictor,
                overlap=overlap / tile,
                mode="gaussian",
            )
            return prob[0].argmax(0).to(torch.uint8)

    run(torch.zeros((1, 1, 2 * tile, 2 * tile)))
    t0 = time.perf_counter()
    with rasterio.open(src) as ds:
        run(torch.from_numpy(ds.read().astype(np.float32))[None])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_gib": peak_rss_bytes() / 2**30}


MONAI_CHILD = (
    "import json, sys; sys.path.insert(0, sys.argv[1]); from bench_pipeline import monai_run; "
    "print(json.dumps(monai_run(*sys.argv[2:])))"
)


def monai_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("monai") is not None


def time_monai(src: Path, model: Path, classes: int) -> dict:
    """:func:`monai_run` in a fresh process: seconds and peak RSS (VmHWM, GiB)."""
    tile = model_tile(model)
    batch = auto_batch_size("cpu", tile)  # geoseg's batch
    argv = [str(src), str(tile), str(default_overlap(None, tile)), str(batch), str(classes)]
    proc = subprocess.run(
        [sys.executable, "-c", MONAI_CHILD, str(BENCH), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise SystemExit(f"MONAI run failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mpx_s(px: float, seconds: float) -> str:
    return f"{px / 1e6 / seconds:.1f}" if seconds > 0 else "-"


def marginal(px: tuple[float, float], seconds: tuple[float, float]) -> str:
    """Mpx/s of the extra pixels between two sizes: (px_b - px_a) / (t_b - t_a)."""
    dt = seconds[1] - seconds[0]
    return f"{(px[1] - px[0]) / 1e6 / dt:.1f}" if dt > 0 else "- (t_b <= t_a)"


TOOLS = ("predict", "gdal", "monai")


def ceiling_runs(args, mosaics: dict, tmp: Path, tools: list[str], classes: int) -> tuple:
    """Table 1's measurements, alternating, ``args.repeat`` times: best times, MONAI RSS, and
    the page faults and system CPU of the fastest predict run of each size."""
    times: dict = {}
    rss: dict = {}
    faults: dict = {}
    time_predict(next(iter(args.inputs.values())), tmp / "warm.tif", args.model)  # warm up
    for _ in range(args.repeat):
        for size, src in mosaics.items():
            for tool in tools:
                if tool == "predict":
                    r0 = resource.getrusage(resource.RUSAGE_SELF)
                    seconds = time_predict(args.inputs[size], tmp / "out.tif", args.model)
                    r1 = resource.getrusage(resource.RUSAGE_SELF)
                    if seconds < times.get((tool, size), float("inf")):
                        faults[size] = (r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime)
                elif tool == "gdal":
                    seconds = time_gdal(src, predict_grid(size, args.model))
                else:
                    m = time_monai(src, args.model, classes)
                    seconds, rss[size] = m["seconds"], max(rss.get(size, 0.0), m["peak_gib"])
                best_of(times, (tool, size), seconds)
    return times, rss, faults


def ceiling_table(args, mosaics: dict, tmp: Path, skip: set, classes: int) -> None:
    tools = [t for t in TOOLS if t not in skip and (t != "monai" or monai_available())]
    times, rss, faults = ceiling_runs(args, mosaics, tmp, tools, classes)
    print(
        f"1. Pipeline ceiling with a zero-cost model (best of {args.repeat}, alternating; "
        "Mpx/s of output pixels; predict in-process, its default)"
    )
    print(
        "| raster | windows | predict_file s | predict Mpx/s | GDAL reads s | GDAL Mpx/s "
        "| MONAI s | MONAI Mpx/s | MONAI peak RSS (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    sizes = list(mosaics)

    def cells(size: int) -> list[str]:
        out = []
        for tool in TOOLS:
            t = times.get((tool, size))
            out += ["-", "-"] if t is None else [f"{t:.2f}", mpx_s(size * size, t)]
        return out

    for size in sizes:
        row = [f"{size}^2", str(len(predict_grid(size, args.model))), *cells(size)]
        row.append(f"{rss[size]:.2f}" if size in rss else "-")
        print("| " + " | ".join(row) + " |")
    for a, b in zip(sizes, sizes[1:], strict=False):
        row = [f"marginal {a}->{b}", "-"]
        for tool in TOOLS:
            if (tool, a) in times:
                row += ["-", marginal((a * a, b * b), (times[(tool, a)], times[(tool, b)]))]
            else:
                row += ["-", "-"]
        print("| " + " | ".join([*row, "-"]) + " |")
    if faults:  # the in-process cluster's worker threads run in this process
        print(
            "\npredict's minor page faults and system CPU s (fastest run): "
            + "; ".join(f"{size}^2 {n}, {sys_s:.2f} s" for size, (n, sys_s) in faults.items())
        )
    if "monai" not in skip and not monai_available():
        print("\nMONAI not installed (pip install -e .[bench])")
    print()


def self_cpu() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reset_transfer_log(dask_worker) -> None:
    """Start a fresh, unbounded log of the worker's get_data transfers."""
    from collections import deque

    dask_worker.transfer_outgoing_log = deque()


def sent_bytes(dask_worker) -> dict:
    """Bytes the worker's get_data wrote since :func:`reset_transfer_log` (wire frames), by
    recipient (``who``: another worker's address, or the client's / scheduler's)."""
    out: dict = {}
    for entry in dask_worker.transfer_outgoing_log:
        out[entry["who"]] = out.get(entry["who"], 0) + int(entry["compressed"])
    return out


def measure_workers(client, src: Path, out: Path, model: Path) -> dict:
    """One ``predict_file`` on ``client``: wall, client and worker CPU s, bytes to the client."""
    client.run(reset_transfer_log)
    workers0 = client.run(self_cpu)
    cpu0 = self_cpu()
    wall = time_predict(src, out, model, client=client)
    cpu = self_cpu() - cpu0
    workers1 = client.run(self_cpu)
    sent = client.run(sent_bytes)
    by_who = [(who, n) for per_worker in sent.values() for who, n in per_worker.items()]
    return {
        "wall": wall,
        "client_cpu": cpu,
        "workers_cpu": sum(workers1[w] - workers0[w] for w in workers1),
        "bytes": sum(n for who, n in by_who if who not in sent),
        "peer_bytes": sum(n for who, n in by_who if who in sent),
    }


def worker_runs(args, mosaics: dict, tmp: Path) -> dict:
    """Table 2's runs on one 2-process cluster: per size, the run of least client CPU."""
    from geoseg.run.scheduling import dask_client

    best: dict = {}
    with dask_client(workers=2) as client:
        patched = client.run(install_stand_in)
        if not all(patched.values()):
            raise SystemExit(f"stand-in not installed on every worker: {patched}")
        if set(client.run(geoseg_dir).values()) != {geoseg_dir()}:
            raise SystemExit("the workers import another geoseg than this process")
        first = next(iter(args.inputs.values()))
        time_predict(first, tmp / "warm.tif", args.model, client=client)  # imports, caches
        for _ in range(args.repeat):
            for size, src in args.inputs.items():
                for fmt in ("tif", "zarr"):  # GeoTIFF: the client writes; Zarr: the workers
                    m = measure_workers(client, src, tmp / f"out_workers.{fmt}", args.model)
                    key = (size, fmt)
                    if key not in best or m["client_cpu"] < best[key]["client_cpu"]:
                        best[key] = m
    return best


def payload_per_px(size: int, model: Path, classes: int) -> float:
    """Result bytes per output pixel: each window's float32 probabilities and bool mask."""
    grid = predict_grid(size, model)
    th, tw = grid.tile
    return len(grid) * th * tw * (4 * classes + 1) / (size * size)


def workers_table(args, mosaics: dict, tmp: Path, classes: int) -> None:
    from geoseg.model.engine import available_cores

    if available_cores() < 2:
        print("2. Client cost with --workers 2: skipped (fewer than 2 cores)\n")
        return
    runs = worker_runs(args, mosaics, tmp)
    print(
        f"2. Client cost with --workers 2 (zero-cost model; of {args.repeat} runs per size, "
        "the one of least client CPU; bytes: the workers' get_data frames, see the docstring)"
    )
    print(
        "| raster | output | wall s | Mpx/s | client CPU s | client CPU s/Mpx | workers CPU s "
        "| client share of CPU | bytes to client B/px | between workers B/px "
        "| per-window payload B/px |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (size, fmt), m in runs.items():
        mpx = size * size / 1e6
        share = m["client_cpu"] / (m["client_cpu"] + m["workers_cpu"])
        payload = payload_per_px(size, args.model, classes)
        print(
            f"| {size}^2 | {FORMATS[fmt]} | {m['wall']:.2f} | {mpx / m['wall']:.1f} | "
            f"{m['client_cpu']:.2f} | {m['client_cpu'] / mpx:.4f} | {m['workers_cpu']:.2f} | "
            f"{share:.3f} | {m['bytes'] / (mpx * 1e6):.2f} | {m['peer_bytes'] / (mpx * 1e6):.2f} | "
            f"{payload:.1f} |"
        )
    sizes = sorted({size for size, _ in runs})
    for fmt in FORMATS:
        for a, b in zip(sizes, sizes[1:], strict=False):
            ra, rb = runs[a, fmt], runs[b, fmt]
            dmpx = (b * b - a * a) / 1e6
            cpu = (rb["client_cpu"] - ra["client_cpu"]) / dmpx
            sent = (rb["bytes"] - ra["bytes"]) / (dmpx * 1e6)
            peer = (rb["peer_bytes"] - ra["peer_bytes"]) / (dmpx * 1e6)
            print(
                f"| marginal {a}->{b} | {FORMATS[fmt]} | - | - | - | {cpu:.4f} | - | - | "
                f"{sent:.2f} | {peer:.2f} | - |"
            )
    print()


FORMATS = {"tif": "GeoTIFF (ZSTD, by the client)", "zarr": "Zarr (by the workers)"}


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "dubai-demo")
    ap.add_argument("--sizes", default="4096,8192", help="raster sides, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (best kept)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: monai,gdal,workers")
    ap.add_argument(
        "--input",
        choices=("tif", "zarr"),
        default="tif",
        help="what predict reads: the GeoTIFF mosaics, or Zarr copies of them (512 px chunks); "
        "GDAL and MONAI read the GeoTIFFs",
    )
    args = ap.parse_args()
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    args.model = args.model.resolve()
    return args


def main() -> None:
    args = _args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    logging.getLogger("geoseg").setLevel(logging.ERROR)  # the mosaics have no georeference
    from rasterio.errors import NotGeoreferencedWarning

    from geoseg.model.checkpoint import read_meta
    from geoseg.runtime import configure

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    configure()  # the process-wide settings `geoseg predict` runs with
    patched = install_stand_in()
    classes = read_meta(args.model).classes
    images = _tiles_source()
    print(
        f"model {args.model} (stand-in: {classes} classes, zero cost; {patched} module "
        f"attributes patched); geoseg from {geoseg_dir()}; "
        f"imagery: {'Dubai mosaic' if images else 'noise'}; predict reads "
        f"{'Zarr copies' if args.input == 'zarr' else 'GeoTIFFs'}; {os.cpu_count()} CPU cores; "
        f"load average at start {os.getloadavg()[0]:.1f}\n"
    )
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-pipeline-") as tmp:
        tmp = Path(tmp)
        mosaics = {s: make_mosaic(tmp / f"mosaic_{s}.tif", s, images) for s in args.sizes}
        args.inputs = mosaics
        if args.input == "zarr":
            args.inputs = {s: zarr_copy(p, tmp / f"mosaic_{s}.zarr") for s, p in mosaics.items()}
        ceiling_table(args, mosaics, tmp, skip, classes)
        if "workers" not in skip:
            workers_table(args, mosaics, tmp, classes)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other jobs share the machine)")


if __name__ == "__main__":
    main()
