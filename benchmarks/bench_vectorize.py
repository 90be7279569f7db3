"""Benchmark `geoseg vectorize`: throughput and peak memory vs one whole-map `shapes` call.

Runs, each in a fresh process so that its peak RSS (VmHWM, the process's own high-water mark)
is clean, on the same class map:

1. ``rasterio.features.shapes`` over the whole map at once (read the band, mask nodata,
   connectivity 4, keep the polygons as returned): the baseline;
2. geoseg's polygons only (``iter_polygons`` over ``classmap_blocks``, block by block, joined
   across block edges, as shapely polygons in map coordinates; nothing written);
3. ``geoseg.run.vector.vectorize`` end to end, written to a file (GeoPackage by default).

and prints a markdown table (Mpx/s, seconds, peak RSS, polygons). Every run gets
``GDAL_CACHEMAX=64`` (MB; geoseg's own bound) unless it is set, so that GDAL's block cache
(5% of RAM by default) does not count a second copy of the map in the baseline. The default
class map is the real ``../shared/data/rasters/cog_cmap.tif`` (7168x8704, 12 classes,
EPSG:3857); ``--crop N`` measures its centred N x N window instead (written to a temporary
GeoTIFF). ``--raster ../shared/data/rasters/cog_world.tif`` (36000x18000) shows the memory
bound on a larger map.
Usage::

    python benchmarks/bench_vectorize.py [--raster PATH] [--crop N] [--block-size 2048]
        [--format gpkg] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "rasters" / "cog_cmap.tif"
# GDAL's block cache of every run, as geoseg bounds its own (geoseg.run.memory.GDAL_CACHE_MB):
# GDAL's default (5% of RAM) would hold a second copy of the whole map in the baseline.
GDAL_CACHE_MB = "64"

# Each child prints {"seconds", "peak", "polygons"}; VmHWM is read at the end of its own run.
PEAK = """
def peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

WHOLE = (
    PEAK
    + """
import json, sys, time, warnings
import numpy as np, rasterio
from rasterio.features import shapes
path = sys.argv[1]
t = time.perf_counter()
with rasterio.open(path) as src:
    band, nodata = src.read(1), src.nodata
    transform = src.transform
mask = None if nodata is None else band != nodata
polygons = list(shapes(band, mask=mask, connectivity=4, transform=transform))
print(json.dumps({"seconds": time.perf_counter() - t, "peak": peak(), "polygons": len(polygons)}))
"""
)

POLYGONS = (
    PEAK
    + """
import json, sys, time
sys.path.insert(0, sys.argv[3])
from geoseg.runtime import configure
from geoseg.run.vector import classmap_blocks, iter_polygons, open_classmap
configure()  # what the CLI and the Python API apply
path, block = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
with open_classmap(path) as src:
    info = src.info
    polygons = iter_polygons(classmap_blocks(src, block), info.height, info.width, info.transform)
    n = sum(1 for _ in polygons)
print(json.dumps({"seconds": time.perf_counter() - t, "peak": peak(), "polygons": n}))
"""
)

VECTORIZE = (
    PEAK
    + """
import json, sys, time
sys.path.insert(0, sys.argv[4])
from geoseg.runtime import configure
from geoseg.run.vector import vectorize
configure()
path, out, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
n = vectorize(path, out, block_size=block, overwrite=True).polygons
print(json.dumps({"seconds": time.perf_counter() - t, "peak": peak(), "polygons": n}))
"""
)


def child(code: str, *args: object) -> dict:
    """Run ``code`` in a fresh interpreter; return the JSON it prints last."""
    env = {**os.environ, "GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", GDAL_CACHE_MB)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def crop(src_path: Path, size: int, workdir: Path) -> Path:
    """The centred ``size`` x ``size`` window of ``src_path`` as a GeoTIFF (same grid, nodata)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        row, col = max((src.height - size) // 2, 0), max((src.width - size) // 2, 0)
        window = Window(col, row, min(size, src.width), min(size, src.height))
        profile = src.profile | {
            "driver": "GTiff",
            "width": int(window.width),
            "height": int(window.height),
            "transform": src.window_transform(window),
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
        }
        data = src.read(window=window)
    out = workdir / f"crop{size}.tif"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def best(runs: list[dict]) -> dict:
    """The fastest of repeated runs (its own peak memory)."""
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", type=Path, default=DEFAULT)
    parser.add_argument("--crop", type=int, default=None, help="Measure an N x N window.")
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--format", default="gpkg", choices=["gpkg", "fgb", "geojson", "parquet"])
    parser.add_argument("--repeat", type=int, default=1, help="Runs each; the fastest is shown.")
    args = parser.parse_args()
    if not args.raster.is_file():
        raise SystemExit(f"class map {args.raster} is absent; pass --raster PATH")
    import rasterio

    with tempfile.TemporaryDirectory(prefix="bench_vectorize_") as tmp:
        work = Path(tmp)
        path = crop(args.raster, args.crop, work) if args.crop else args.raster
        with rasterio.open(path) as src:
            height, width = src.height, src.width
        out = work / f"out.{args.format}"
        rows = {
            "rasterio.features.shapes, whole map": best(
                [child(WHOLE, path) for _ in range(args.repeat)]
            ),
            f"geoseg polygons, {args.block_size}^2 blocks": best(
                [child(POLYGONS, path, args.block_size, REPO) for _ in range(args.repeat)]
            ),
            f"geoseg vectorize -> .{args.format}": best(
                [child(VECTORIZE, path, out, args.block_size, REPO) for _ in range(args.repeat)]
            ),
        }
    mpx = height * width / 1e6
    print(
        f"class map: {args.raster.name}" + (f" (centred {args.crop}^2 crop)" if args.crop else "")
    )
    print(f"size: {width}x{height} ({mpx:.1f} Mpx), best of {args.repeat}\n")
    print("| run | seconds | Mpx/s | peak RSS (MiB) | polygons |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['seconds']:.2f} | {mpx / r['seconds']:.1f} | "
            f"{r['peak'] / 2**20:.0f} | {r['polygons']} |"
        )
    counts = {r["polygons"] for r in rows.values()}
    print("\npolygon counts agree" if len(counts) == 1 else f"\npolygon counts DIFFER: {counts}")


if __name__ == "__main__":
    main()
