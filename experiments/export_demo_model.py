"""Copy the demo run's best checkpoint to ``models/dubai-demo`` and write its model card.

Usage: ``python experiments/export_demo_model.py [RUN_DIR] [--mpx-s N]`` (default
``experiments/runs/dubai-demo``, produced by the command recorded in the checkpoint). The card's
IoUs come from ``geoseg evaluate --model`` (predict's tiled path) on the validation parts and on
Tile 7; ``--mpx-s`` is the end-to-end speed measured by ``benchmarks/bench_predict.py``.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "models" / "dubai-demo"


def card(meta: dict, rows: list[dict], size: int, val: dict, tile7: dict, mpx_s: str) -> str:
    """The model card's Markdown text: the summary, then the tables."""
    extra = meta["extra"]
    opts = json.dumps(meta["model_options"])
    return f"""# Model card: `models/dubai-demo`

A small land-cover segmentation model bundled with geoseg for the demo (`make demo`) and as
the source model of the new-region experiment ([experiments/README.md](../experiments/README.md)).

- **Architecture**: segmentation-models-pytorch `{meta["arch"]}` with encoder
  `{meta["encoder"]}`, options `{opts}`, trained from scratch (no pretrained weights);
  {meta["in_channels"]} input bands (RGB, 8-bit, divided by {meta["scale"]:g}, then
  normalized with the per-band mean/std of the training images stored in `geoseg.json`).
- **Size**: {size / 1e6:.1f} MB on disk (safetensors weights + JSON).
- **Training data**: "Semantic segmentation of aerial imagery" by Humans in the Loop (Dubai,
  MBRSC satellites; public domain, CC0), from `../shared/data/dubai-aerial`: Tiles 1-6,
  parts 001-008 ({len(extra["train_samples"])} images).
- **Validation** (parts never seen in training): part 009 of each of Tiles 1-6
  ({len(extra["val_samples"])} images). **Validation mIoU: {val["miou"]:.3f}** with `geoseg
  evaluate --model` (predict's tiled path; the best epoch, {extra["epoch"]}, was picked on
  whole-image passes: {extra["val_miou"]:.3f}). Dataset-level macro mIoU over the 5 classes;
  Unlabeled and black pixels excluded.
- **A region it has not seen**: Tile 7 parts 003-009 (7 images), **mIoU {tile7["miou"]:.3f}**
  (source only; adapting and fine-tuning: [experiments/README.md](../experiments/README.md)).
- **Speed**: {mpx_s} Mpx/s end to end (`geoseg predict` of a 4096^2 mosaic, tile 256, on the
  2-core CPU: `python benchmarks/bench_predict.py --model models/dubai-demo --skip rss,monai
  --eff-sizes 4096`).
- **Not for**: other sensors or resolutions without adaptation; it is a demo model trained on
  a CPU.

""" + tables(meta, rows, val, tile7)


def tables(meta: dict, rows: list[dict], val: dict, tile7: dict) -> str:
    """The card's classes, training command and learning curve."""
    from geoseg.commands.quicklook import colour_name

    extra = meta["extra"]
    classes = "\n".join(
        f"| {i} | {n} | #{c[0]:02X}{c[1]:02X}{c[2]:02X} ({colour_name(tuple(c))}) | "
        f"{val['iou'][n]:.3f} | {tile7['iou'][n]:.3f} |"
        for i, (n, c) in enumerate(zip(meta["class_names"], meta["colours"], strict=True))
    )
    curve = "\n".join(
        f"| {r['epoch']} | {float(r['train_loss']):.4f} | {float(r['val_miou']):.4f} |"
        for r in rows
    )
    return f"""## Classes

`Unlabeled` (#9B9B9B) and black (#000000) mask pixels are ignored in training and evaluation.

| id | class | colour | validation IoU | Tile 7 IoU |
|---|---|---|---|---|
{classes}

## Training command (run from the repository root, CPU)

```
{extra["command"]}
python experiments/export_demo_model.py RUN_DIR --mpx-s N   # copy, score, write this card
```

Config: `configs/train_dubai.yaml` (256 px chips, class-balanced random sampling, flips/rot90,
scale 0.7-1.4, per-band brightness/contrast, gamma, saturation, hue, blur and noise, CE + Dice,
AdamW with warm-up and cosine decay, seed 0).

## Learning curve

| epoch | train loss | val mIoU |
|---|---|---|
{curve}
"""


def main() -> None:
    """Copy the checkpoint, score it with the CLI and write ``models/MODEL_CARD.md``."""
    import argparse

    sys.path.insert(0, str(Path(__file__).parent))
    from new_region import TILE7, evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", default=str(REPO / "experiments/runs/dubai-demo"))
    p.add_argument("--mpx-s", default="(not measured)", help="bench_predict's end-to-end speed")
    args = p.parse_args()
    run = Path(args.run)
    best = run / "best"
    DEST.parent.mkdir(exist_ok=True)
    tmp = DEST.with_name(".dubai-demo.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best, tmp)
    shutil.rmtree(DEST, ignore_errors=True)
    tmp.rename(DEST)
    meta = json.loads((DEST / "geoseg.json").read_text())
    rows = list(csv.DictReader((run / "log.csv").open()))
    size = sum(p.stat().st_size for p in DEST.iterdir())
    val = evaluate(DEST, f"folder:{TILE7[:-1]}[1-6]", ("--include", "*/image_part_009"))
    tile7 = evaluate(DEST)
    text = card(meta, rows, size, val, tile7, args.mpx_s)
    (REPO / "models" / "MODEL_CARD.md").write_text(text)
    print(f"{DEST}: {size} bytes, val mIoU {val['miou']:.4f}, Tile 7 mIoU {tile7['miou']:.4f}")


if __name__ == "__main__":
    main()
