"""Presenting evaluation results: a table on stdout, JSON, CSV and a PNG plot (atomic files)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import click
import numpy as np

from geoseg.errors import OutputError, OutputExistsError
from geoseg.metrics import EvalResult


def check_outputs(paths: list[str | None], overwrite: bool) -> None:
    """Refuse existing report files (without ``--overwrite``) and missing directories, early."""
    for p in paths:
        if not p:
            continue
        path = Path(p)
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
        if not path.resolve().parent.is_dir():
            raise OutputError(f"directory {path.parent} does not exist; create it first")


def _atomic_write(path: str, data: bytes) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fmt(x: float) -> str:
    return "   n/a" if np.isnan(x) else f"{100 * x:6.2f}"


def table(result: EvalResult) -> str:
    """Summary metrics first, then one row per class (IoU, accuracy, pixels)."""
    lines = [
        f"mIoU (macro)      {_fmt(result.miou)}",
        f"micro IoU         {_fmt(result.micro_iou)}",
        f"pixel accuracy    {_fmt(result.pixel_accuracy)}",
        f"mean accuracy     {_fmt(result.mean_accuracy)}",
        f"frequency-w. IoU  {_fmt(result.fwiou)}",
        f"mean Dice         {_fmt(result.mean_dice)}",
        f"pixels scored     {int(result.confusion.sum()):,}",
        "",
        f"{'id':>3}  {'class':<20} {'IoU':>6} {'acc':>6} {'prec':>6} {'pixels':>14}",
    ]
    for i, name in enumerate(result.class_names):
        lines.append(
            f"{i:>3}  {name[:20]:<20} {_fmt(result.iou[i])} {_fmt(result.accuracy[i])} "
            f"{_fmt(result.precision[i])} {int(result.pixels[i]):>14,}"
        )
    return "\n".join(lines)


def to_csv(result: EvalResult) -> str:
    """Per-class metrics as CSV (summary rows at the end)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "class", "iou", "accuracy", "precision", "dice", "pixels"])
    for c in result.to_dict()["classes"]:
        w.writerow(
            [c["id"], c["name"], c["iou"], c["accuracy"], c["precision"], c["dice"], c["pixels"]]
        )
    for key, value in result.to_dict()["summary"].items():
        w.writerow(["", key, value, "", "", "", ""])
    return buf.getvalue()


def plot_png(result: EvalResult, path: str) -> None:
    """Row-normalized confusion-matrix heatmap beside a per-class IoU bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(result.class_names)
    cm = result.confusion[:, :k].astype(np.float64)
    norm = cm / np.maximum(result.confusion.sum(1, keepdims=True), 1)
    size = max(6.0, 0.35 * k + 3)
    fig, (a, b) = plt.subplots(1, 2, figsize=(2 * size, size))
    im = a.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    a.set_title("confusion matrix (rows: ground truth, normalized)")
    a.set_xlabel("prediction")
    a.set_ylabel("ground truth")
    if k <= 40:
        a.set_xticks(range(k), result.class_names, rotation=90, fontsize=7)
        a.set_yticks(range(k), result.class_names, fontsize=7)
    fig.colorbar(im, ax=a, fraction=0.046)
    iou = np.nan_to_num(result.iou, nan=0.0)
    b.barh(range(k), iou)
    b.set_yticks(range(k), result.class_names if k <= 40 else [""] * k, fontsize=7)
    b.invert_yaxis()
    b.set_xlim(0, 1)
    b.set_title(f"per-class IoU (mIoU {100 * result.miou:.1f})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    _atomic_write(path, buf.getvalue())


def report(result: EvalResult, notes: list[str], *, json_out=None, csv_out=None, plot=None):
    """Print the table and notes; write the requested files."""
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(table(result))
    if json_out:
        doc = result.to_dict()
        doc["notes"] = notes
        _atomic_write(json_out, (json.dumps(doc, indent=2) + "\n").encode())
    if csv_out:
        _atomic_write(csv_out, to_csv(result).encode())
    if plot:
        plot_png(result, plot)
