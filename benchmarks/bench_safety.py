"""Benchmark what the safety checks cost `geoseg predict`: this checkout against a baseline.

Each GeoTIFF prediction is resumable: after every block row its files are fsync'd, the bytes
handed to GDAL are hashed, and `progress.json` is written through an exclusive, fsync'd
temporary; before any work every output path is checked against every input. This prints the
end-to-end time (the summary's seconds, model loading and cluster start included) and peak
memory of the same predict from this checkout and from a baseline checkout (e.g. a
`git worktree` of the commit before the checks), alternating runs so that both see the same
machine noise. Usage::

    git worktree add /tmp/old 891b27a
    python benchmarks/bench_safety.py --baseline /tmp/old [--size 4096] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench_predict import REPO, _tiles_source, default_model, make_mosaic, run_predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="Checkout to compare with.")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-safety-") as tmp:
        work = Path(tmp)
        model = args.model or default_model(work)
        src = make_mosaic(work / f"mosaic_{args.size}.tif", args.size, _tiles_source())
        print(f"{args.size}^2 raster, model {model}, {args.rounds} alternating rounds")
        print("| outputs | baseline (s) | this checkout (s) | ratio | peak GiB (base / this) |")
        print("|---|---|---|---|---|")
        cases = (("class map", ()), ("class map + --probabilities", ("--probabilities",)))
        for label, extra in cases:
            base, this, peaks = [], [], ([], [])
            for r in range(args.rounds):
                for repo, times, peak in ((args.baseline, base, peaks[0]), (REPO, this, peaks[1])):
                    out = work / f"out_{repo.name}_{r}.tif"
                    res = run_predict(src, out, model, *extra, repo=repo)
                    times.append(res["seconds"])
                    peak.append(res["peak_gib"])
            b, t = statistics.median(base), statistics.median(this)
            print(
                f"| {label} | {b:.2f} | {t:.2f} | {t / b:.3f} | "
                f"{max(peaks[0]):.2f} / {max(peaks[1]):.2f} |"
            )


if __name__ == "__main__":
    main()
