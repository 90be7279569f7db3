"""Copy the demo run's best checkpoint to ``models/dubai-demo`` and write its model card.

Usage: ``python experiments/export_demo_model.py [RUN_DIR]`` (default
``experiments/runs/dubai-demo``, produced by the command recorded in the checkpoint).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "models" / "dubai-demo"


def card(meta: dict, rows: list[dict], size: int) -> str:
    """The model card's Markdown text."""
    extra = meta["extra"]
    iou = extra["val_iou"]
    classes = "\n".join(
        f"| {i} | {n} | #{c[0]:02X}{c[1]:02X}{c[2]:02X} | {iou.get(n, float('nan')):.3f} |"
        for i, (n, c) in enumerate(zip(meta["class_names"], meta["colours"], strict=True))
    )
    curve = "\n".join(
        f"| {r['epoch']} | {float(r['train_loss']):.4f} | {float(r['val_miou']):.4f} |"
        for r in rows
    )
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
  ({len(extra["val_samples"])} images). **Validation mIoU: {extra["val_miou"]:.3f}** (best
  epoch {extra["epoch"]}, dataset-level macro mIoU over the 5 classes, whole-image forward
  passes; Unlabeled and black pixels excluded).
- **Not for**: other sensors, resolutions or regions without adaptation (see the Tile 7
  results in [experiments/README.md](../experiments/README.md)); it is a demo model trained
  for ~30 CPU minutes.

## Classes

`Unlabeled` (#9B9B9B) and black (#000000) mask pixels are ignored in training and evaluation.

| id | class | colour | validation IoU |
|---|---|---|---|
{classes}

## Training command (run from the repository root, CPU)

```
{extra["command"]}
python experiments/export_demo_model.py   # copies runs/.../best here and writes this card
```

Config: `configs/train_dubai.yaml` (256 px chips, class-balanced random sampling, flips/rot90,
scale 0.75-1.33, brightness/contrast, CE + Dice, AdamW with warm-up and cosine decay, seed 0).

## Learning curve

| epoch | train loss | val mIoU |
|---|---|---|
{curve}
"""


def main() -> None:
    """Copy the checkpoint and write ``models/MODEL_CARD.md``."""
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "experiments/runs/dubai-demo"
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
    (REPO / "models" / "MODEL_CARD.md").write_text(card(meta, rows, size))
    print(f"{DEST}: {size} bytes, val mIoU {meta['extra']['val_miou']:.4f}")


if __name__ == "__main__":
    main()
