"""The new-region experiment on Dubai: source-only vs. adapt methods vs. fine-tuning.

Source = the bundled model trained on Tiles 1-6 (``models/dubai-demo``); new region = Tile 7.
Fine-tuning uses the labels of Tile 7 part 001 (1 part) or parts 001-002 (2 parts); ``adapt``
uses the images (no labels) of all nine Tile 7 parts. Every variant is scored on the labels of
Tile 7 parts 003-009, which no variant trains on. Each variant is produced by the real CLI.

Usage: ``python experiments/new_region.py [--model models/dubai-demo] [--threads 2]``.
Writes ``experiments/new_region_results.json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TILE7 = "../shared/data/dubai-aerial/Tile 7"
RUNS = REPO / "experiments" / "runs" / "new-region"
ADAPT = ["stats", "adabn", "tent", "self-training", "stats,adabn", "stats,adabn,self-training"]
FINETUNE = {
    "finetune, 1 part": ["*/image_part_001"],
    "finetune, 2 parts": ["*/image_part_001", "*/image_part_002"],
}


def geoseg(*args: str) -> None:
    """Run the CLI like a user; stop on failure."""
    print("$ geoseg " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-c", "import cli; cli.main()", *args], cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode})")


def test_samples():
    """Tile 7 parts 003-009 with labels (the experiment's test set)."""
    from geoseg.config import load_yaml
    from geoseg.train.config import build_train_config
    from geoseg.train.sources import load_samples

    cfg = build_train_config(load_yaml(REPO / "configs" / "train_dubai_finetune.yaml"))
    spec = {"kind": "folder", "path": TILE7, "exclude": ["*/image_part_001", "*/image_part_002"]}
    cfg = build_train_config(cfg.to_dict() | {"train": [spec]})
    return load_samples(cfg.train, cfg, "test")


def evaluate(ckpt: Path, samples) -> dict:
    """Score a checkpoint (mIoU, per-class IoU) on the test samples."""
    from geoseg.model.checkpoint import load_checkpoint
    from geoseg.train.evaluation import evaluate_samples

    model, meta = load_checkpoint(ckpt)
    sc = evaluate_samples(model, meta, samples, "cpu")
    return {"miou": sc.miou, "iou": dict(zip(sc.class_names, sc.iou, strict=True))}


def variants(model: Path, threads: str) -> dict[str, Path]:
    """Produce every variant's checkpoint with the CLI; return name -> checkpoint."""
    RUNS.mkdir(parents=True, exist_ok=True)
    out = {"source only": model}
    images = f"{TILE7}/images/*.jpg"
    for method in ADAPT:
        ckpt = RUNS / f"adapt-{method.replace(',', '+')}"
        geoseg(
            "adapt",
            images,
            "--model",
            str(model),
            "--out",
            str(ckpt),
            "--method",
            method,
            "--windows",
            "64",
            "--tile",
            "256",
            "--threads",
            threads,
            "--overwrite",
            "-q",
        )
        out[f"adapt {method}"] = ckpt
    for name, parts in FINETUNE.items():
        run = RUNS / f"ft-{len(parts)}"
        spec = json.dumps([{"kind": "folder", "path": TILE7, "include": parts}])
        geoseg(
            "finetune",
            "--model",
            str(model),
            "--config",
            "configs/train_dubai_finetune.yaml",
            "--out",
            str(run),
            "--set",
            f"train={spec}",
            "--threads",
            threads,
            "--overwrite",
            "--no-progress",
        )
        out[name] = run / "last"
    return out


def table(results: dict[str, dict]) -> str:
    """Markdown table: mIoU, gain over source-only, per-class IoU."""
    names = list(next(iter(results.values()))["iou"])
    base = results["source only"]["miou"]
    lines = [
        "| variant | mIoU | vs source | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for k, r in results.items():
        ious = " | ".join(f"{r['iou'][n]:.3f}" for n in names)
        lines.append(f"| {k} | {r['miou']:.4f} | {100 * (r['miou'] - base):+.1f} pts | {ious} |")
    return "\n".join(lines)


def main() -> None:
    """Build all variants, score them, write and print the table."""
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "dubai-demo"))
    p.add_argument("--threads", default="2")
    args = p.parse_args()
    torch.set_num_threads(int(args.threads))
    t0 = time.time()
    ckpts = variants(Path(args.model), args.threads)
    samples = test_samples()
    results = {name: evaluate(c, samples) for name, c in ckpts.items()}
    md = table(results)
    (REPO / "experiments" / "new_region_results.json").write_text(json.dumps(results, indent=2))
    note = (
        f"Test set: Tile 7 parts 003-009 ({len(samples)} images). "
        f"Total time {time.time() - t0:.0f} s on CPU.\n\n"
    )
    (REPO / "experiments" / "new_region_results.md").write_text(note + md + "\n")
    print(note + md)


if __name__ == "__main__":
    main()
