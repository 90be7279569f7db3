"""Benchmark `geoseg evaluate` on the 648 Mpx pair: throughput and peak RSS vs naive numpy.

The label is ../shared/data/rasters/cog_world.tif (36000 x 18000, values 0/1, nodata 0); the
prediction is a perturbed copy (5% of pixels flipped, no nodata) written block by block to a
temporary folder. Both tools compute the same 2-class confusion matrix (label nodata excluded)
in fresh processes; the table gives Mpx/s and each process's peak RSS, and checks the matrices
are equal. Usage::

    python benchmarks/bench_evaluate.py [--workdir /tmp/geoseg-bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LABEL = REPO.parent / "shared" / "data" / "rasters" / "cog_world.tif"

MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'rc': p.returncode, 'seconds': time.perf_counter() - t, 'out': p.stdout,"
    " 'err': p.stderr[-2000:],"
    " 'peak_gib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}))\n"
)

NAIVE = r"""
import json, sys
import numpy as np, rasterio
pred, label = sys.argv[1:3]
with rasterio.open(label) as src:
    t = src.read(1)
    valid = src.read_masks(1) > 0
with rasterio.open(pred) as src:
    p = src.read(1)
cm = np.bincount(t[valid].astype(np.int64) * 2 + p[valid], minlength=4).reshape(2, 2)
print(json.dumps(cm.tolist()))
"""


def perturbed_copy(label: Path, out: Path, frac: float = 0.05) -> Path:
    import rasterio

    if out.exists():
        return out
    rng = np.random.default_rng(0)
    with rasterio.open(label) as src:
        prof = src.profile.copy()
        prof.update(
            driver="GTiff",
            nodata=None,
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            BIGTIFF="IF_SAFER",
        )
        with rasterio.open(out, "w", **prof) as dst:
            for _, win in src.block_windows(1):
                data = src.read(1, window=win)
                flip = rng.random(data.shape) < frac
                data[flip] = 1 - data[flip]
                dst.write(data, 1, window=win)
    return out


def measure(cmd: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, cwd=REPO
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"{cmd[:4]} failed: {res['err']}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "geoseg-bench")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    if not LABEL.exists():
        raise SystemExit(f"{LABEL} is absent: the benchmark needs ../shared/data")
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pred = perturbed_copy(LABEL, args.workdir / "cog_world_perturbed.tif")
    print(f"perturbed copy ready ({time.perf_counter() - t0:.0f} s): {pred}")
    mpx = 36000 * 18000 / 1e6
    out_json = args.workdir / "eval.json"
    g = measure(
        [
            sys.executable,
            "-c",
            "import cli; cli.main()",
            "evaluate",
            str(pred),
            str(LABEL),
            "--num-classes",
            "2",
            "--no-progress",
            "--overwrite",
            "--json",
            str(out_json),
        ]
    )
    ours = json.loads(out_json.read_text())["confusion_matrix"]
    rows = [("geoseg evaluate (Dask, 2048 px blocks)", g)]
    naive_cm = None
    if not args.skip_naive:
        n = measure([sys.executable, "-c", NAIVE, str(pred), str(LABEL)])
        naive_cm = json.loads(n["out"].strip().splitlines()[-1])
        rows.append(("naive full-array numpy", n))
    print(f"\n{mpx:.0f} Mpx pair, 2 classes, label nodata excluded\n")
    print("| method | seconds | Mpx/s | peak RSS (GiB) |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.1f} | {mpx / r['seconds']:.1f} | {r['peak_gib']:.2f} |")
    if naive_cm is not None:
        print(f"\nconfusion matrices equal: {ours == naive_cm}  ({ours})")


if __name__ == "__main__":
    main()
