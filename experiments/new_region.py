"""The new-region experiment on Dubai: source-only vs. adapt methods vs. fine-tuning.

Source = the bundled model trained on Tiles 1-6 (``models/dubai-demo``); new region = Tile 7.
Fine-tuning uses the labels of Tile 7 part 001 (1 part) or parts 001-002 (2 parts); ``adapt``
uses the images (no labels) of all nine Tile 7 parts. Every variant is scored on the labels of
Tile 7 parts 003-009, which no variant trains on. Each variant is produced and scored by the real
CLI (``geoseg adapt`` / ``finetune``, then ``geoseg evaluate --model``: predict's tiled path).

Usage: ``python experiments/new_region.py [--model models/dubai-demo] [--threads 2]
[--only TEXT]`` (``--only`` re-runs the variants whose name holds TEXT, keeping the others).
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
# ``--method`` and flags of each adapt variant
ADAPT = [
    "hist",
    "stats",
    "adabn",
    "tent --no-consistency",
    "tent",
    "self-training --no-consistency",
    "self-training",
    "self-training --seed 1",
    "self-training --seed 2",
    "self-training --curriculum",
    "hist,adabn",
    "stats,adabn",
    "adabn,self-training --curriculum",
    "hist,adabn,self-training --curriculum",
]
TEST_PARTS = ("*/image_part_001", "*/image_part_002")  # excluded: the fine-tuning labels
# name -> (labelled parts trained on, part that picks the best epoch or None, extra flags)
FINETUNE = {
    "finetune, 1 part": (["*/image_part_001"], None, []),
    "finetune, 1 part, frozen encoder": (["*/image_part_001"], None, ["--freeze-encoder"]),
    "finetune, 1 part, best epoch on part 002": (["*/image_part_001"], "*/image_part_002", []),
    "finetune, 2 parts": (["*/image_part_001", "*/image_part_002"], None, []),
    "finetune, 2 parts, 12 epochs": (
        ["*/image_part_001", "*/image_part_002"],
        None,
        ["--epochs", "12"],
    ),
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


def evaluate(
    ckpt: Path,
    dataset: str = f"folder:{TILE7}",
    select: tuple[str, ...] = (),
    config: str = "configs/dubai.yaml",
) -> dict:
    """``geoseg evaluate --model`` on the test images: mIoU and per-class IoU."""
    select = select or tuple(a for p in TEST_PARTS for a in ("--exclude", p))
    report = geoseg("evaluate", "--dataset", dataset, "--config", config,
                    "--model", str(ckpt), *select, "--json", "-", "--no-progress")  # fmt: skip
    doc = json.loads(report)
    iou = {c["name"]: c["iou"] for c in doc["classes"]}
    return {"miou": doc["summary"]["miou"], "iou": iou}


def variants(model: Path, threads: str, only: str | None = None) -> dict[str, Path]:
    """Produce every variant's checkpoint (or those whose name holds ``only``) with the CLI."""
    RUNS.mkdir(parents=True, exist_ok=True)
    out = {"source only": model}
    images = f"{TILE7}/images/*.jpg"
    for variant in ADAPT:
        if only is not None and only not in f"adapt {variant}":
            continue
        method, *flags = variant.split()
        ckpt = RUNS / ("adapt-" + variant.replace(",", "+").replace(" --", "-").replace(" ", "-"))
        geoseg("adapt", images, "--model", str(model), "--out", str(ckpt), "--method", method,
               *flags, "--windows", "64", "--tile", "256", "--threads", threads,
               "--overwrite", "-q")  # fmt: skip
        out[f"adapt {variant}"] = ckpt
    for i, (name, (parts, val, flags)) in enumerate(FINETUNE.items()):
        if only is not None and only not in name:
            continue
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


def table(results: dict[str, dict], base: str = "source only") -> str:
    """Markdown table: mIoU, gain over the variant ``base``, per-class IoU."""
    names = list(next(iter(results.values()))["iou"])
    ref = results[base]["miou"]
    lines = [
        f"| variant | mIoU | vs {base} | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for k, r in results.items():
        ious = " | ".join(f"{r['iou'][n]:.3f}" for n in names)
        lines.append(f"| {k} | {r['miou']:.4f} | {100 * (r['miou'] - ref):+.1f} pts | {ious} |")
    return "\n".join(lines)


def main() -> None:
    """Build all variants, score them, write and print the table."""
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "dubai-demo"))
    p.add_argument("--threads", default="2")
    p.add_argument("--only", help="re-run only the variants whose name holds this text")
    args = p.parse_args()
    torch.set_num_threads(int(args.threads))
    t0 = time.time()
    ckpts = variants(Path(args.model), args.threads, args.only)
    saved = REPO / "experiments" / "new_region_results.json"
    results = json.loads(saved.read_text()) if args.only else {}
    results.update({name: evaluate(c) for name, c in ckpts.items()})
    order = ["source only", *(f"adapt {v}" for v in ADAPT), *FINETUNE]
    results = {k: results[k] for k in order if k in results}
    md = table(results)
    saved.write_text(json.dumps(results, indent=2))
    note = (
        "Test set: Tile 7 parts 003-009 (7 images). "
        f"Total time {time.time() - t0:.0f} s on CPU"
        + (f" (this run: --only {args.only!r}; the other rows kept)" if args.only else "")
        + ".\n\n"
    )
    (REPO / "experiments" / "new_region_results.md").write_text(note + md + "\n")
    print(note + md)


if __name__ == "__main__":
    main()
