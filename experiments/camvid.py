"""The new-region workflow on a second region of another kind: CamVid street scenes.

The Dubai demo model knows aerial imagery and five classes; CamVid is 101 street frames with
eleven classes. ``geoseg finetune`` starts from the demo model with a new 11-class head (the
rows of Building and Road start from the demo head's rows of the same name) and is compared
with ``geoseg train`` from scratch, with the same recipe (``configs/train_camvid.yaml``), on all
71 training frames and on the first 21 frames only (few labels). Every variant is scored by
``geoseg evaluate --model`` on the last 30 frames of the sequence (``0016E5_081*``), which no
variant trains on. Label-free ``adapt`` does not apply here: the source model has none of
CamVid's classes but two.

Usage: ``python experiments/camvid.py [--model models/dubai-demo] [--threads 2] [--epochs 10]
[--only TEXT]``. Adds its rows to ``experiments/camvid_results.json`` (rows of other schedules
are kept), rewrites ``.md`` from it and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from new_region import REPO, evaluate, geoseg, table  # noqa: E402

CAMVID = "../shared/data/camvid"
CONFIG = "configs/train_camvid.yaml"
RUNS = REPO / "experiments" / "runs" / "camvid"
HELD_OUT = "0016E5_081*"
FEW = "0016E5_079[5-9]*"  # frames 07959-07999: the first 21 of the sequence
# name -> (command, frames trained on: --set train=...)
VARIANTS = {
    "from scratch, 71 frames": ("train", {"exclude": [HELD_OUT]}),
    "fine-tuned from the demo model, 71 frames": ("finetune", {"exclude": [HELD_OUT]}),
    "from scratch, 21 frames": ("train", {"include": [FEW]}),
    "fine-tuned from the demo model, 21 frames": ("finetune", {"include": [FEW]}),
}


def variants(model: Path, threads: str, epochs: int, only: str | None) -> dict[str, Path]:
    """Train the variants (those whose name holds ``only``) with the CLI; name -> checkpoint."""
    out = {}
    for i, (name, (command, frames)) in enumerate(VARIANTS.items()):
        name = f"{name}, {epochs} epochs"
        if only is not None and only not in name:
            continue
        run = RUNS / f"{command}-{i}-{epochs}"
        spec = json.dumps([{"kind": "folder", "path": CAMVID, **frames}])
        init = ["--model", str(model)] if command == "finetune" else []
        geoseg(command, *init, "--config", CONFIG, "--out", str(run), "--set", f"train={spec}",
               "--epochs", str(epochs), "--threads", threads, "--overwrite",
               "--no-progress")  # fmt: skip
        out[name] = run / "last"
    return out


def main() -> None:
    """Build the variants, score them on the held-out frames, write and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "dubai-demo"))
    p.add_argument("--threads", default="2")
    p.add_argument("--epochs", type=int, default=10, help="of every variant [10]")
    p.add_argument("--only", help="run only the variants whose name holds this text")
    args = p.parse_args()
    t0 = time.time()
    ckpts = variants(Path(args.model), args.threads, args.epochs, args.only)
    saved = REPO / "experiments" / "camvid_results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    held_out = ("--include", HELD_OUT)
    for name, ckpt in ckpts.items():
        results[name] = evaluate(ckpt, f"folder:{CAMVID}", held_out, "configs/camvid.yaml")
    results = dict(sorted(results.items(), key=lambda kv: _order(kv[0])))
    saved.write_text(json.dumps(results, indent=2))
    md = table(results, base=next(iter(results)))
    note = (
        f"Test set: CamVid frames {HELD_OUT} (30 frames, held out from every variant). "
        f"Last run: {time.time() - t0:.0f} s on CPU for {len(ckpts)} variant(s).\n\n"
    )
    (REPO / "experiments" / "camvid_results.md").write_text(note + md + "\n")
    print(note + md)


def _order(name: str) -> tuple[int, int]:
    """Table order: by schedule, then as in :data:`VARIANTS`."""
    base, epochs = name.rsplit(", ", 1)
    return int(epochs.split()[0]), list(VARIANTS).index(base)


if __name__ == "__main__":
    main()
