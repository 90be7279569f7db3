"""The bundled demo: model size and metadata, `make demo`'s script, seamless tiled prediction."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "dubai-demo"
IMAGE = REPO / "demo" / "dubai_tile3_part009.tif"


@pytest.fixture(scope="module")
def model():
    if not (MODEL / "model.safetensors").is_file():
        pytest.fail(f"bundled model {MODEL} is missing")
    return MODEL


def test_bundled_model_is_small_and_described(model):
    size = sum(p.stat().st_size for p in model.iterdir())
    assert size <= 25 * 1024 * 1024  # the demo model's budget (a CPU-friendly download)
    meta = json.loads((model / "geoseg.json").read_text())
    assert meta["class_names"] == ["Building", "Land", "Road", "Vegetation", "Water"]
    assert meta["extra"]["val_miou"] >= 0.0
    assert "geoseg train" in meta["extra"]["command"]
    card = (REPO / "models" / "MODEL_CARD.md").read_text()
    assert f"{meta['extra']['val_miou']:.3f}" in card


def test_demo_image_is_not_georeferenced():
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(IMAGE) as src:
            assert src.crs is None and src.transform.is_identity
            assert src.count == 3 and src.dtypes[0] == "uint8"


def test_run_demo_writes_class_map_and_quicklook(model, tmp_path):
    import rasterio
    from PIL import Image

    done = subprocess.run(
        [sys.executable, str(REPO / "demo" / "run_demo.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(tmp_path / "classes.tif") as src, rasterio.open(IMAGE) as img:
            ids = src.read(1)
            assert src.shape == img.shape and src.crs is None
    present = np.unique(ids)
    assert set(present.tolist()) <= {0, 1, 2, 3, 4} and len(present) >= 3
    png = Image.open(tmp_path / "quicklook.png")
    assert png.width > 2 * 600 * 0.9
    assert "Building" in done.stdout


def test_tiled_prediction_is_seamless_on_real_image(model, shared_data, tmp_path):
    """Gaussian blending leaves no seams: labels change across window edges about as often as
    elsewhere (the seam ratio of benchmarks/bench_seams.py, at most 1.2)."""
    from helpers import load_benchmark

    measure = load_benchmark("bench_seams").measure
    image = shared_data / "dubai-aerial" / "Tile 7" / "images" / "image_part_005.jpg"
    boundary, other, ratio = measure(image, model, "gaussian", 256, 64, tmp_path / "c.tif")
    assert other > 0 and ratio <= 1.2, (boundary, other, ratio)
