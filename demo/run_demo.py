"""`make demo`: segment the bundled Dubai image with the bundled model, then draw a quicklook.

Runs the real CLI (``geoseg predict`` and ``geoseg quicklook``) in subprocesses and writes
``demo-output/classes.tif`` (class map) and ``demo-output/quicklook.png`` (image beside the
colour class map with a legend). Needs no network, no GPU and no data outside the repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "dubai-demo"
IMAGE = REPO / "demo" / "dubai_tile3_part009.tif"
OUT = REPO / "demo-output"


def geoseg(*args: str) -> None:
    """Run one geoseg command like a user would; stop the demo if it fails."""
    cmd = [sys.executable, "-c", "import cli; cli.main()", *args]
    print("$ geoseg " + " ".join(args), flush=True)
    done = subprocess.run(cmd, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def class_shares(classes: Path, model: Path) -> str:
    """One line per class: the share of the image predicted as that class."""
    import json
    import warnings

    import numpy as np
    import rasterio

    names = json.loads((model / "geoseg.json").read_text())["class_names"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(classes) as src:
            ids = src.read(1)
    counts = np.bincount(ids[ids < len(names)].ravel(), minlength=len(names))
    return "\n".join(
        f"  {n:<12} {100 * c / max(counts.sum(), 1):5.1f} %"
        for n, c in zip(names, counts, strict=True)
    )


def main(argv: list[str] | None = None) -> None:
    """Predict, then render the quicklook."""
    import argparse

    parser = argparse.ArgumentParser(description="Run the geoseg demo.")
    parser.add_argument("--out", default=str(OUT), help="Output folder [demo-output].")
    out = Path(parser.parse_args(argv).out)
    out.mkdir(exist_ok=True)
    classes, png = out / "classes.tif", out / "quicklook.png"
    geoseg(
        "predict",
        str(IMAGE),
        str(classes),
        "--model",
        str(MODEL),
        "--tile",
        "256",
        "--overlap",
        "64",
        "--blend",
        "gaussian",
        "--overwrite",
    )
    geoseg("quicklook", str(IMAGE), str(classes), str(png), "--model", str(MODEL), "--overwrite")
    print(f"class map: {classes}\nquicklook: {png}\n" + class_shares(classes, MODEL))


if __name__ == "__main__":
    main()
