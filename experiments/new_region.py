"""The new-region experiment on Dubai: source-only vs. adapt methods vs. fine-tuning.

Source = the bundled model trained on Tiles 1-6 (``models/dubai-demo``); new region = Tile 7.
Fine-tuning uses the labels of Tile 7 part 001 (1 part) or parts 001-002 (2 parts); ``adapt``
uses the images (no labels) of all nine Tile 7 parts. Every variant is scored on the labels of
Tile 7 parts 003-009, which no variant trains on. Each variant is produced and scored by the real
CLI (``geoseg adapt`` / ``finetune``, then ``geoseg evaluate --model``: predict's tiled path).

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
ADAPT = [
    "hist",
    "stats",
    "adabn",
    "tent",
    "self-training",
    "hist,adabn",
    "stats,adabn",
    "hist,adabn,self-training",
]
TEST_PARTS = ("*/image_part_001", "*/image_part_002")  # excluded: the fine-tuning labels
# name -> (labelled parts trained on, part that picks the best epoch or None, extra flags)
FINETUNE = {
    "finetune, 1 part": (["*/image_part_001"], None, []),
    "finetune, 1 part, frozen encoder": (["*/image_part_001"], None, ["--freeze-encoder"]),
    "finetune, 1 part, best epoch on part 002": (["*/image_part_001"], "*/image_part_002", []),
    "finetune, 2 parts": (["*/image_part_001", "*/image_part_002"], None, []),
}


def geoseg(*args: str) -> str:
    """Run the CLI like a user; stop on failure; return its standard output."""
    print("$ geoseg " + " ".join(args), flush=True)
    done = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode})")
    return done.stdout


def evaluate(ckpt: Path, dataset: str = f"folder:{TILE7}", *select: str) -> dict:
    """``geoseg evaluate --model`` on the test parts: mIoU and per-class IoU."""
    select = select or tuple(a for p in TEST_PARTS for a in ("--exclude", p))
    report = geoseg("evaluate", "--dataset", dataset, "--config", "configs/dubai.yaml",
                    "--model", str(ckpt), *select, "--json", "-", "--no-progress")  # fmt: skip
    doc = json.loads(report)
    iou = {c["name"]: c["iou"] for c in doc["classes"]}
    return {"miou": doc["summary"]["miou"], "iou": iou}


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
    for i, (name, (parts, val, flags)) in enumerate(FINETUNE.items()):
        run = RUNS / f"ft-{i}"
        spec = json.dumps([{"kind": "folder", "path": TILE7, "include": parts}])
        held_out = json.dumps([{"kind": "folder", "path": TILE7, "include": [val]}] if val else [])
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
            "--set",
            f"val={held_out}",
            "--threads",
            threads,
            "--overwrite",
            "--no-progress",
            *flags,
        )
        out[name] = run / ("best" if val else "last")
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
    results = {name: evaluate(c) for name, c in ckpts.items()}
    md = table(results)
    (REPO / "experiments" / "new_region_results.json").write_text(json.dumps(results, indent=2))
    note = (
        "Test set: Tile 7 parts 003-009 (7 images). "
        f"Total time {time.time() - t0:.0f} s on CPU.\n\n"
    )
    (REPO / "experiments" / "new_region_results.md").write_text(note + md + "\n")
    print(note + md)


if __name__ == "__main__":
    main()
