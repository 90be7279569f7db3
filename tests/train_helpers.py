"""Tiny labelled datasets and configs for the training/adaptation tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

PALETTE = {"Sea": (0, 0, 255), "Sand": (255, 255, 0), "Town": (255, 0, 0)}
IGNORE = (0, 0, 0)
TINY_MODEL = {
    "arch": "unet",
    "encoder": "tu-resnet10t",
    "model_options": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}


def scene(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A real-looking toy scene: class regions with class-dependent brightness plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    ids = ((xx + 7 * seed) // 16 + (yy // 16)) % 3
    base = np.array([[40, 60, 160], [200, 190, 90], [150, 60, 60]], np.float64)[ids]
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return np.moveaxis(img, -1, 0), ids.astype(np.int64)


def write_folder(
    root: Path, n: int = 4, h: int = 48, w: int = 40, seed: int = 0, ignore_corner: bool = True
) -> Path:
    """Write ``root/images/*.png`` and RGB ``root/masks/*.png``."""
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    colours = np.array(list(PALETTE.values()), np.uint8)
    for i in range(n):
        img, ids = scene(h, w, seed + i)
        rgb = colours[ids]
        if ignore_corner:
            rgb[:4, :4] = IGNORE
        Image.fromarray(np.moveaxis(img, 0, -1)).save(root / "images" / f"part_{i:03d}.png")
        Image.fromarray(rgb).save(root / "masks" / f"part_{i:03d}.png")
    return root


def write_config(path: Path, data: Path, **over) -> Path:
    """A tiny training config over the folder ``data`` (last part validates)."""
    cfg = {
        "train": [{"kind": "folder", "path": str(data), "exclude": ["*/part_003"]}],
        "val": [{"kind": "folder", "path": str(data), "include": ["*/part_003"]}],
        "classes": [{"name": n, "colour": list(c)} for n, c in PALETTE.items()],
        "ignore_colours": ["#000000"],
        **TINY_MODEL,
        "chip_size": 32,
        "chips_per_epoch": 8,
        "batch_size": 4,
        "epochs": 2,
        "lr": 0.003,
        "num_threads": 1,
        "device": "cpu",
        "seed": 1,
    }
    cfg.update(over)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (exit code and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
