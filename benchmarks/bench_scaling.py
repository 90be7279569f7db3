"""Scaling of `geoseg predict` with the number of Dask worker processes.

Two workloads, each run with `--workers 1, 2, ...` up to the cores (a local cluster of worker
processes, each running its share of the cores, see `geoseg.run.scheduling.process_layout`)
and with no `--workers` (0: the default in-process threads): a batch of 8 rasters of 1024^2
and one raster of 4096^2 (Dubai mosaics on a local pixel grid, see bench_predict.py). Prints
Mpx/s (wall time of the whole command, cluster start included), the speed-up over the first
row, and the scaling efficiency (speed-up / workers). A second table gives the client's share
of all CPU time with each worker count (the client process against its worker processes, the
real model), which bounds the speed-up on a bigger cluster (Amdahl). Usage::

    python benchmarks/bench_scaling.py [--model models/dubai-demo] [--workers 1,2,0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import REPO, _tiles_source, make_mosaic  # noqa: E402


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise SystemExit(f"failed: {proc.stderr[-1500:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "dubai-demo")
    from geoseg.model.engine import available_cores

    cores = available_cores()  # predict refuses more worker processes than cores
    counts = [n for n in (1, 2, 4, 8, 16) if n <= cores]
    ap.add_argument(
        "--workers",
        default=",".join(map(str, [*counts, 0])),
        help="0: no --workers (in-process) [default: 1, 2, 4... up to the cores, then 0]",
    )
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "geoseg-bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    images = _tiles_source()
    batch = []
    for i in range(8):
        p = args.workdir / f"batch_{i}.tif"
        if not p.exists():
            big = make_mosaic(args.workdir / f"seed_{i}.tif", 1024, images[i:] if images else None)
            big.rename(p)
        batch.append(p)
    large = make_mosaic(args.workdir / "mosaic_4096.tif", 4096, images)
    print(f"model {args.model}; {os.cpu_count()} CPU cores\n")
    print("| workload | workers | seconds | Mpx/s | speed-up | efficiency |")
    print("|---|---|---|---|---|---|")
    for name, mpx, make_args in (
        (
            "8 x 1024^2 batch",
            8 * 1024**2 / 1e6,
            lambda n, out: [*map(str, batch), "--output-dir", str(out)],
        ),
        ("1 x 4096^2 raster", 4096**2 / 1e6, lambda n, out: [str(large), str(out / "large.tif")]),
    ):
        base = None
        for n in (int(w) for w in args.workers.split(",")):
            out = args.workdir / f"scaling_{n}"
            out.mkdir(exist_ok=True)
            workers = ["--workers", str(n)] if n else []
            secs = run(
                [
                    "predict",
                    *make_args(n, out),
                    "--model",
                    str(args.model),
                    *workers,
                    "--overwrite",
                    "--no-progress",
                ]
            )
            base = base or secs
            label = str(n) if n else "in-process"
            eff = f"{base / secs / n:.2f}" if n else "-"
            print(
                f"| {name} | {label} | {secs:.1f} | {mpx / secs:.2f} | {base / secs:.2f} | {eff} |"
            )
    client_share(args, large, [int(w) for w in args.workers.split(",") if int(w)])


def client_share(args, large: Path, counts: list[int]) -> None:
    """The client's share of all CPU time with the real model: what bounds the speed-up.

    With ``n`` workers and a client share ``c``, Amdahl's law caps the speed-up of a cluster of
    any size at ``1 / c`` (the client's work does not spread).
    """
    from bench_pipeline import measure_workers

    from geoseg.run.scheduling import dask_client

    print("\n| raster | workers | client CPU s | workers CPU s | client share | Amdahl bound |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        with dask_client(workers=n) as client:
            measure_workers(client, large, args.workdir / "warm.tif", args.model)  # warm up
            m = measure_workers(client, large, args.workdir / "share.tif", args.model)
        share = m["client_cpu"] / (m["client_cpu"] + m["workers_cpu"])
        print(
            f"| 4096^2 | {n} | {m['client_cpu']:.2f} | {m['workers_cpu']:.2f} | {share:.3f} | "
            f"{1 / share:.0f}x |"
        )


if __name__ == "__main__":
    main()
