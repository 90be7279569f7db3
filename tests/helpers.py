"""Helpers shared by test modules (import as ``from helpers import ...``)."""

from __future__ import annotations

from pathlib import Path

from geoseg.model.checkpoint import ModelMeta, build_model, default_colours, save_checkpoint

TINY = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}


def make_checkpoint(path, bands=3, classes=4, seed=0, tile=64):
    """Write a tiny random Unet checkpoint that predicts several classes."""
    import torch

    meta = ModelMeta(
        arch="unet",
        encoder="resnet18",
        in_channels=bands,
        classes=classes,
        class_names=[f"c{i}" for i in range(classes)],
        colours=default_colours(classes),
        mean=[0.5] * bands,
        std=[0.25] * bands,
        scale=255.0,
        tile_size=tile,
        model_options=TINY,
    )
    torch.manual_seed(seed)
    model = build_model(meta)
    # A spread of output biases makes the random model predict varied classes.
    with torch.no_grad():
        model.segmentation_head[0].bias.copy_(torch.linspace(-0.2, 0.2, classes))
    return save_checkpoint(model, meta, path)


def load_benchmark(name: str):
    """A script of ``benchmarks/`` as a module (they are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def naive_reference(ckpt, image, valid, tile, overlap, blend, batch_size):
    """Each strip's windows summed into a full-size array, then the strips (the documented order).

    The class map ``geoseg predict`` must reproduce bit for bit, whatever its block size,
    workers and threads.
    """

    from geoseg.core.blend import window_weights
    from geoseg.core.plan import class_dtype, evaluate_batch, make_plan
    from geoseg.core.stitch import normalize_sums, to_classes
    from geoseg.core.strips import reference_accumulate
    from geoseg.io.raster import ArraySource
    from geoseg.model.engine import Engine

    engine = Engine.from_checkpoint(ckpt, device="cpu")
    src = ArraySource(image, valid)
    h, w = image.shape[-2:]
    plan = make_plan(h, w, tile=tile, overlap=overlap, batch_size=batch_size, blend=blend)
    contribs = []
    for b in plan.batches:
        res = evaluate_batch(
            lambda win: src.read(win.row, win.col, win.height, win.width),
            engine.predict_proba,
            plan.grid,
            b,
        )
        k = 0
        for i, v, ran in zip(res.indices, res.valid, res.run, strict=True):
            if ran:
                contribs.append((i, res.probs[k], window_weights(plan.grid, i, blend) * v))
                k += 1
    sums, weights = reference_accumulate(plan.grid, contribs, engine.meta.classes, plan.strips)
    dtype, nodata = class_dtype(engine.meta.classes)
    return to_classes(normalize_sums(sums, weights), weights, nodata, dtype)
