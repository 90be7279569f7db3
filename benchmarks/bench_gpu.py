"""Benchmark the CUDA path: model alone vs end-to-end predict, torch.compile, workers, MONAI.

Prints markdown tables, one row as soon as it is measured:

1. The model alone (``Engine.predict_proba`` on real windows of the raster, batch 16, bf16,
   as many calls as predict makes) against end-to-end ``geoseg.run.pipeline.predict_file``
   (in-process, best of 2 after a warm-up run), their throughput (Mpx/s) and ratio (goal
   >= 0.85); without and with ``compile``; the peak host RSS (VmHWM, reset before each row)
   and ``torch.cuda.max_memory_allocated`` of this process.
2. End-to-end throughput with ``--workers 1,2,4`` (a local cluster, started before the timed
   run, warmed by one run: each worker process loads the model on the GPU once).
3. MONAI's ``sliding_window_inference`` (``sw_device`` and ``device`` cuda, the engine's
   model, roi 256, overlap 0.25, Gaussian, the same batch and bf16), when MONAI is installed.

The raster (8192^2, 3 bands uint8, tiled deflate GeoTIFF) is bench_predict's mosaic of Dubai
aerial images (noise when ``../shared`` is absent). Without a CUDA GPU nothing is measured
(exit 0). Usage::

    python benchmarks/bench_gpu.py [--model models/dubai-demo] [--size 8192]
        [--workers 1,2,4] [--skip compile,workers,monai]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import _tiles_source, make_mosaic  # noqa: E402

DEVICE = "cuda"  # the device measured (a module constant, so a smoke test can swap it)
TILE, OVERLAP, BATCH = 256, 64, 16
GOAL = 0.85


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "dubai-demo")
    ap.add_argument("--size", type=int, default=8192, help="raster side in pixels")
    ap.add_argument("--workers", default="1,2,4", help="worker processes of table 2")
    ap.add_argument("--skip", default="", help="comma list of sections: compile,workers,monai")
    return ap.parse_args()


def reset_peaks() -> None:
    """Reset this process's VmHWM (Linux) and torch's CUDA peak counters."""
    import torch

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the host peak is then the process's peak so far
    torch.cuda.reset_peak_memory_stats()


def peaks() -> tuple[float, float]:
    """(peak host RSS, peak CUDA memory allocated) since :func:`reset_peaks`, GiB."""
    import torch

    from geoseg.run.pipeline import peak_rss_bytes

    return peak_rss_bytes() / 2**30, torch.cuda.max_memory_allocated() / 2**30


def read_windows(src: Path, n: int) -> np.ndarray:
    """The first ``n`` windows of the predict grid (TILE, stride TILE - OVERLAP), float32."""
    import rasterio

    step = TILE - OVERLAP
    with rasterio.open(src) as ds:
        per_row = (ds.width - OVERLAP) // step
        out = [
            ds.read(window=((r, r + TILE), (c, c + TILE)))
            for i in range(n)
            for r, c in [((i // per_row) * step, (i % per_row) * step)]
        ]
    return np.stack(out).astype(np.float32)


def model_alone(model: Path, src: Path, n_batches: int, compile: bool) -> dict:
    """Seconds for ``n_batches`` calls of ``predict_proba`` (batch BATCH, bf16, on CUDA)."""
    from geoseg.model.engine import Engine

    engine = Engine.from_checkpoint(model, device=DEVICE, precision="bf16", compile=compile)
    x = read_windows(src, BATCH)
    t0 = time.perf_counter()
    engine.predict_proba(x)  # CUDA context, cuDNN autotuning, compiling
    first = time.perf_counter() - t0
    engine.predict_proba(x)
    best = float("inf")
    reset_peaks()
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(n_batches):
            engine.predict_proba(x)
        best = min(best, time.perf_counter() - t0)
    rss, gpu = peaks()
    return {"seconds": best, "first_call_s": first, "rss": rss, "gpu": gpu}


def end_to_end(src: Path, model: Path, cfg, out_dir: Path, client=None, repeats: int = 2) -> dict:
    """Best ``predict_file`` seconds of ``repeats`` runs after a warm-up run."""
    from geoseg.run.pipeline import predict_file

    t0 = time.perf_counter()
    warm = predict_file(src, out_dir / "warm.tif", model, cfg, overwrite=True, client=client)
    first = time.perf_counter() - t0
    reset_peaks()
    best = float("inf")
    for r in range(repeats):
        s = predict_file(src, out_dir / f"e2e{r}.tif", model, cfg, overwrite=True, client=client)
        best = min(best, s.seconds)
    rss, gpu = peaks()
    return {"seconds": best, "first_s": first, "windows": warm.run, "rss": rss, "gpu": gpu}


def compile_wired(model: Path, cfg) -> bool:
    """Whether predict's engine recipe carries ``cfg.compile`` (pipeline.engine_spec)."""
    from geoseg.run.pipeline import engine_spec

    return bool(getattr(engine_spec(model, "cuda", cfg, None), "compile", False))


def _row(name: str, compile: bool, r: dict, mpx: float, base: dict | None) -> None:
    rate = mpx / r["seconds"]
    ratio = f"{rate / (mpx / base['seconds']):.2f}" if base else "1.00"
    print(
        f"| {name} | {'yes' if compile else 'no'} | {r['seconds']:.2f} | {rate:.1f} | {ratio} "
        f"| {r['rss']:.2f} | {r['gpu']:.2f} |",
        flush=True,
    )


def throughput_table(args, src: Path, out_dir: Path, compile: bool) -> tuple[dict, dict | None]:
    """Table 1 (``compile`` off) or 4 (on): model alone and end-to-end predict_file rows."""
    from geoseg.config import PredictConfig

    mpx = args.size**2 / 1e6
    print(
        f"{4 if compile else 1}. Model alone vs end-to-end predict_file ({args.size}^2, tile "
        f"{TILE}, overlap {OVERLAP}, batch {BATCH}, bf16, compile {'on' if compile else 'off'}; "
        f"goal: end-to-end / model alone >= {GOAL})"
    )
    print(
        "| run | compile | seconds | Mpx/s | end-to-end / model alone | peak host RSS (GiB) "
        "| peak CUDA allocated (GiB) |\n|---|---|---|---|---|---|---|",
        flush=True,
    )
    cfg = PredictConfig(
        tile=TILE, overlap=OVERLAP, batch_size=BATCH, device=DEVICE, precision="bf16",
        compile=compile,
    )  # fmt: skip
    e2e = None
    if not compile or compile_wired(args.model, cfg):
        e2e = end_to_end(src, args.model, cfg, out_dir)
        args.windows = e2e["windows"]
    alone = model_alone(args.model, src, -(-args.windows // BATCH), compile)
    _row("model alone", compile, alone, mpx, None)
    if e2e:
        _row("end-to-end predict_file", compile, e2e, mpx, alone)
    else:
        print(
            "| end-to-end predict_file | yes | not measured: geoseg.run.pipeline.engine_spec "
            "does not pass cfg.compile to EngineSpec | | | | |"
        )
    first = f"first model call {alone['first_call_s']:.1f} s"
    if e2e:
        first += f"; warm-up predict run {e2e['first_s']:.1f} s"
    print(f"  ({first})\n", flush=True)
    return alone, e2e


def workers_table(args, src: Path, out_dir: Path) -> None:
    from geoseg.config import PredictConfig
    from geoseg.run.scheduling import dask_client

    mpx = args.size**2 / 1e6
    print(
        "2. End-to-end predict_file with --workers N (local cluster of N processes, each "
        "with the model on the GPU; timed after a warm-up run)"
    )
    print("| workers | seconds | Mpx/s |\n|---|---|---|", flush=True)
    for n in [int(w) for w in args.workers.split(",")]:
        cfg = PredictConfig(
            tile=TILE,
            overlap=OVERLAP,
            batch_size=BATCH,
            device=DEVICE,
            precision="bf16",
            workers=n,
        )
        with dask_client(n, None) as client:
            r = end_to_end(src, args.model, cfg, out_dir, client=client, repeats=1)
        print(f"| {n} | {r['seconds']:.2f} | {mpx / r['seconds']:.1f} |", flush=True)
    print()


def monai_run(model: Path, src: Path) -> tuple[float, np.ndarray]:
    """Seconds (read, normalize, infer) and class map of MONAI's sliding_window_inference."""
    import rasterio
    import torch
    from monai.inferers import sliding_window_inference

    from geoseg.model.engine import Engine, normalize

    engine = Engine.from_checkpoint(model, device=DEVICE, precision="bf16")
    fmt = torch.channels_last if DEVICE == "cuda" else torch.contiguous_format

    def predictor(t):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            out = engine.model(t.contiguous(memory_format=fmt))
        return torch.softmax(out.float(), 1)

    t0 = time.perf_counter()
    with rasterio.open(src) as ds:
        img = ds.read().astype(np.float32)
    x = torch.from_numpy(normalize(img, engine.meta))[None]
    with torch.inference_mode():
        prob = sliding_window_inference(
            x,
            roi_size=(TILE, TILE),
            sw_batch_size=BATCH,
            predictor=predictor,
            overlap=OVERLAP / TILE,
            mode="gaussian",
            sw_device=DEVICE,
            device=DEVICE,
        )
        classes = prob[0].argmax(0).to(torch.uint8).cpu().numpy()
    return time.perf_counter() - t0, classes


def monai_table(args, src: Path, out_dir: Path, ours_e2e: dict) -> None:
    import rasterio

    print(
        f"3. geoseg vs MONAI sliding_window_inference ({args.size}^2, roi {TILE}, overlap "
        f"{OVERLAP / TILE}, gaussian, batch {BATCH}, bf16, sw_device/device cuda)"
    )
    try:
        import monai  # noqa: F401
    except ImportError:
        print("MONAI not installed (pip install -e '.[bench]')\n")
        return
    ours = out_dir / "e2e0.tif"
    if not ours.exists():
        print("not measured: table 1's end-to-end class map is missing\n")
        return
    monai_run(args.model, src)  # warm-up: CUDA context, cuDNN autotuning
    reset_peaks()
    seconds, classes = monai_run(args.model, src)
    rss, gpu = peaks()
    with rasterio.open(ours) as ds:
        agree = float((ds.read(1) == classes).mean())
    mpx = args.size**2 / 1e6
    print("| tool | Mpx/s | peak host RSS (GiB) | peak CUDA allocated (GiB) |\n|---|---|---|---|")
    print(
        f"| geoseg predict_file (read, infer, blend, write) | {mpx / ours_e2e['seconds']:.1f} "
        f"| {ours_e2e['rss']:.2f} | {ours_e2e['gpu']:.2f} |"
    )
    print(f"| MONAI (read + infer, writes nothing) | {mpx / seconds:.1f} | {rss:.2f} | {gpu:.2f} |")
    print(f"class maps agree with geoseg's end-to-end map on {100 * agree:.2f}% of pixels\n")


def main() -> None:
    args = _args()
    import torch

    if not torch.cuda.is_available():
        print("GPU benchmark: not measured: no CUDA GPU on this machine")
        return
    from geoseg.runtime import configure

    configure()  # the process-wide settings `geoseg predict` runs with
    logging.getLogger("geoseg").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*TF32.*")
    args.skip = set(args.skip.split(","))
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; model {args.model}")
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-gpu-") as tmp:
        out_dir = Path(tmp)
        t0 = time.perf_counter()
        src = make_mosaic(out_dir / f"raster_{args.size}.tif", args.size, _tiles_source())
        print(f"raster {args.size}^2 written in {time.perf_counter() - t0:.1f} s\n", flush=True)
        args.windows = 0
        plain, plain_e2e = throughput_table(args, src, out_dir, compile=False)
        if "workers" not in args.skip:
            workers_table(args, src, out_dir)
        if "monai" not in args.skip:
            monai_table(args, src, out_dir, plain_e2e)
        if "compile" not in args.skip:  # last: compiling takes minutes
            compiled, _ = throughput_table(args, src, out_dir, compile=True)
            speedup = plain["seconds"] / compiled["seconds"]
            print(f"compile speed-up of the model alone: {speedup:.2f}x")


if __name__ == "__main__":
    main()
