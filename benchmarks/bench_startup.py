"""Benchmark the fixed cost of one `geoseg predict`: what a small raster pays whatever its size.

Each row is a fresh process, timed from outside (wall seconds, median of ``--repeat``):

1. ``python -c "import cli"``: Python start and geoseg's imports for the CLI.
2. ``geoseg predict`` of a 256 x 256 raster (one window) with the bundled model, in-process
   threads (the default): imports, the in-process cluster, the model load, one window, the
   GeoTIFF and its sidecars.
3. The same with ``--workers 1``: a local cluster of one worker process, which loads the
   model itself (the client no longer loads it only to check it).
4. The same on a 2048 x 2048 raster (121 windows), for scale.

Usage::

    python benchmarks/bench_startup.py [--repeat 3] [--model models/dubai-demo]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench_predict import REPO, _tiles_source, make_mosaic  # noqa: E402


def wall(cmd: list[str], repeat: int) -> float:
    """Median wall seconds of ``cmd`` over ``repeat`` fresh runs (each must succeed)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "dubai-demo")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="geoseg-startup-") as tmp:
        folder = Path(tmp)
        images = _tiles_source()
        small = make_mosaic(folder / "small.tif", 256, images)
        large = make_mosaic(folder / "large.tif", 2048, images)

        def predict(src: Path, *flags: str) -> list[str]:
            out = folder / f"out_{src.stem}.tif"
            return [sys.executable, "cli.py", "predict", str(src), str(out), "--model",
                    str(args.model), "--overwrite", *flags]  # fmt: skip

        rows = [
            ("Python start + CLI imports", [sys.executable, "-c", "import cli"]),
            ("predict 256^2 (1 window), in-process threads", predict(small)),
            ("predict 256^2 (1 window), --workers 1", predict(small, "--workers", "1")),
            ("predict 2048^2 (121 windows), in-process threads", predict(large)),
        ]
        print(f"Fixed cost of one `geoseg predict` (fresh process each, median of {args.repeat})")
        print("| run | wall s |")
        print("|---|---|")
        for name, cmd in rows:
            print(f"| {name} | {wall(cmd, args.repeat):.2f} |")


if __name__ == "__main__":
    main()
