"""Presenting evaluation results: a table on stdout, JSON, CSV and a PNG plot (atomic files)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Mapping

import click
import numpy as np

from geoseg.core.metrics import EvalResult
from geoseg.errors import InputError
from geoseg.io.files import check_target, is_same_or_inside

PathLike = str | os.PathLike[str]


def check_outputs(
    outputs: Mapping[str, PathLike | None],
    overwrite: bool,
    inputs: Iterable[PathLike | None] = (),
) -> None:
    """Refuse report paths early: an input, a link, a repeated path, an existing file.

    Parameters
    ----------
    outputs : mapping
        Option name (``"--json"``) -> path, ``None`` when not given.
    overwrite : bool
        Whether existing files may be replaced.
    inputs : iterable of path-like
        Everything the command reads; none of it is ever written.

    Raises
    ------
    InputError
        An output is an input, or two outputs are the same file.
    OutputError, OutputExistsError
        See :func:`geoseg.io.files.check_target`.
    """
    from geoseg.io.writers import touched_paths

    given = [(opt, p) for opt, p in outputs.items() if p]
    written = {opt: [p] for opt, p in given}
    if outputs.get("--error-map"):
        with contextlib.suppress(InputError):  # a bad extension is reported below
            written["--error-map"] = touched_paths(outputs["--error-map"])
    for i, (opt, p) in enumerate(given):
        for other, q in given[:i]:
            if any(
                is_same_or_inside(a, b) or is_same_or_inside(b, a)
                for a in written[opt]
                for b in written[other]
            ):
                raise InputError(
                    f"{opt} {p} and {other} {q} would write the same file; give each output "
                    "its own path"
                )
    for opt, p in given:
        if opt == "--error-map":
            from geoseg.run.scoring import check_error_map

            check_error_map(p, overwrite, inputs)
        else:
            check_target(p, overwrite=overwrite, inputs=inputs, what=opt)


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


def plot_png(result: EvalResult) -> bytes:
    """Row-normalized confusion-matrix heatmap beside a per-class IoU bar chart, as PNG bytes."""
    from matplotlib.figure import Figure  # an object of its own: no pyplot state, any backend

    k = len(result.class_names)
    cm = result.confusion[:, :k].astype(np.float64)
    norm = cm / np.maximum(result.confusion.sum(1, keepdims=True), 1)
    size = max(6.0, 0.35 * k + 3)
    fig = Figure(figsize=(2 * size, size))
    a, b = fig.subplots(1, 2)
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
    return buf.getvalue()


def report(
    result: EvalResult,
    notes: list[str],
    *,
    json_out: PathLike | None = None,
    csv_out: PathLike | None = None,
    plot: PathLike | None = None,
    overwrite: bool = True,
    inputs: Iterable[PathLike | None] = (),
) -> None:
    """Print the table and notes; write the requested files (atomically, umask's mode).

    Each file goes through :func:`geoseg.io.files.atomic_write`: an exclusive temporary beside
    it, never a fixed name a planted link could redirect, and never one of ``inputs``.
    """
    from geoseg.report.outputs import emit

    for note in notes:
        click.echo(f"note: {note}", err=True)

    def as_json() -> str:
        return json.dumps({**result.to_dict(), "notes": notes}, indent=2) + "\n"

    renders = {
        "--json": as_json,
        "--csv": lambda: to_csv(result),
        "--plot": lambda: plot_png(result),
    }
    outputs = {"--json": json_out, "--csv": csv_out, "--plot": plot}
    emit(table(result), renders, outputs, overwrite, inputs)
