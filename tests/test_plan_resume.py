"""Resuming a plan from a block row reproduces the full run's blocks exactly (no model needed)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.plan import assemble_blocks, evaluate_batch, make_plan
from geoseg.core.strips import Finish, blend_strip, ordered_rows
from geoseg.io.raster import ArraySource


def fake_proba(batch):
    """A deterministic per-pixel 'model': softmax of fixed linear maps of the bands."""
    w = np.array([[0.9, -0.2, 0.1], [-0.5, 0.7, 0.3], [0.1, 0.1, -0.8]], np.float32)
    logits = np.einsum("kc,bchw->bkhw", w, batch / 255.0)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def blocks_of(plan, src, start_row=0):
    first_strip = plan.resume_point(start_row) if start_row else 0
    finish = Finish(255, "uint8", probabilities=True, confidence="margin")

    def read(w):
        return src.read(w.row, w.col, w.height, w.width)

    results = (
        blend_strip(
            plan.grid,
            strip,
            (evaluate_batch(read, fake_proba, plan.grid, b) for b in plan.strip_batches(strip)),
            3,
            plan.blend,
            finish,
        )
        for strip in plan.strips[first_strip:]
    )
    pieces = ordered_rows(results, finish)
    return {
        (b.window.row, b.window.col): (b.classes, b.probs, b.confidence)
        for b in assemble_blocks(plan, pieces, finish, 3, start_row=start_row)
    }


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(20, 120),
    w=st.integers(5, 60),
    tile=st.integers(8, 30),
    ov=st.integers(0, 7),
    block=st.integers(8, 40),
    bs=st.integers(1, 5),
    k=st.integers(1, 4),
    rows=st.integers(1, 3),
)
def test_resume_from_any_block_row_matches_full_run(h, w, tile, ov, block, bs, k, rows):
    rng = np.random.default_rng(h * w)
    image = rng.integers(0, 255, (3, h, w)).astype(np.float32)
    valid = rng.random((h, w)) > 0.05
    src = ArraySource(image, valid)
    plan = make_plan(
        h, w, tile=tile, overlap=ov % tile, batch_size=bs, blend="gaussian", block_size=block,
        strip_rows=rows,
    )  # fmt: skip
    full = blocks_of(plan, src)
    starts = list(range(0, h, block))
    start = starts[min(k, len(starts) - 1)]
    resumed = blocks_of(plan, src, start)
    assert set(resumed) == {key for key in full if key[0] >= start}
    for key, layers in resumed.items():
        for got, want in zip(layers, full[key], strict=True):
            assert np.array_equal(got, want)
