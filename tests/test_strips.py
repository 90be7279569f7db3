"""Strips: their partition of the raster, and blending by strips against the naive reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.blend import window_weights
from geoseg.core.plan import BatchResult, make_plan
from geoseg.core.stitch import normalize_sums, to_classes
from geoseg.core.strips import (
    Finish,
    blend_strip,
    has_seam_above,
    make_strips,
    ordered_rows,
    reference_accumulate,
)
from tilers.grid import Grid

grids = st.builds(
    lambda h, w, tile, ov: Grid.create(h, w, tile, ov % tile),
    st.integers(1, 120),
    st.integers(1, 60),
    st.integers(4, 30),
    st.integers(0, 29),
)


@settings(max_examples=80, deadline=None)
@given(grid=grids, height=st.integers(1, 6))
def test_strips_cover_the_grid_and_no_row_is_touched_by_three(grid, height):
    strips = make_strips(grid, height)
    assert [g for s in strips for g in range(*s.grid_rows)] == list(range(grid.shape[0]))
    touched = np.zeros(grid.height, int)
    for s in strips:
        touched[slice(*s.rows)] += 1
    assert touched.min() >= 1 and touched.max() <= 2
    # interiors and seams partition the rows, top to bottom
    edges = [0]
    for s in strips:
        assert s.rows[0] <= s.interior[0] <= s.interior[1] <= s.rows[1]
        assert (touched[slice(*s.interior)] == 1).all()
        edges += [s.interior[0], s.interior[1]]
    edges.append(grid.height)
    assert edges == sorted(edges)
    assert edges[1] == 0 and edges[-2] == grid.height
    for a, b in zip(strips, strips[1:], strict=False):
        assert (a.interior[1], a.rows[1]) == (b.rows[0], b.interior[0])  # the seam
        assert has_seam_above(b) == (a.rows[1] > b.rows[0])


def fake_results(plan, k, seed):
    """Every window evaluated with random probabilities; some pixels nodata, window 1 skipped."""
    rng = np.random.default_rng(seed)
    th, tw = plan.grid.tile
    out = {}
    for indices in plan.batches:
        valid = [rng.random((th, tw)) > 0.1 for _ in indices]
        run = tuple(i != 1 for i in indices)
        probs = rng.random((sum(run), k, th, tw), dtype=np.float32)
        probs /= probs.sum(1, keepdims=True)
        out[indices] = BatchResult(tuple(indices), valid, probs, run)
    return out


def contributions(plan, results):
    for res in results.values():
        kept = iter(res.probs)
        for i, v, ran in zip(res.indices, res.valid, res.run, strict=True):
            if ran:
                yield i, next(kept), window_weights(plan.grid, i, plan.blend) * v


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 100),
    w=st.integers(1, 50),
    tile=st.integers(4, 24),
    ov=st.integers(0, 23),
    bs=st.integers(1, 4),
    k=st.integers(1, 4),
    seed=st.integers(0, 3),
    rows=st.integers(1, 4),
)
def test_blending_by_strips_equals_the_naive_reference_bit_for_bit(
    h, w, tile, ov, bs, k, seed, rows
):
    plan = make_plan(
        h, w, tile=tile, overlap=ov % tile, batch_size=bs, blend="gaussian", strip_rows=rows
    )
    results = fake_results(plan, k, seed)
    finish = Finish(255, "uint8", probabilities=True, confidence="entropy")
    strips = (
        blend_strip(
            plan.grid, s, [results[b] for b in plan.strip_batches(s)], k, plan.blend, finish
        )
        for s in plan.strips
    )
    pieces = list(ordered_rows(strips, finish))
    assert [p.row0 for p in pieces] == sorted(p.row0 for p in pieces)
    classes = np.concatenate([p.classes for p in pieces])
    probs = np.concatenate([p.probs for p in pieces], axis=1)
    sums, weights = reference_accumulate(plan.grid, contributions(plan, results), k, plan.strips)
    ref = to_classes(normalize_sums(sums, weights), weights, 255, "uint8")
    assert classes.shape == (h, w)
    assert np.array_equal(classes, ref)
    ref_finished = finish.rows(0, sums, weights)
    assert np.array_equal(probs, ref_finished.probs)
    assert np.array_equal(np.concatenate([p.confidence for p in pieces]), ref_finished.confidence)


def test_the_order_is_per_strip_then_across_the_seam():
    grid = Grid.create(12, 4, 8, 4)  # two grid rows sharing rows 4..7
    strips = make_strips(grid, 1)
    assert len(strips) == 2 and strips[0].rows[1] == 8 and strips[1].rows[0] == 4
    ones = np.ones((1, 8, 4), np.float32)
    contribs = [(0, ones * 0.25, np.ones((8, 4), np.float32)), (1, ones, np.ones((8, 4)))]
    sums, weights = reference_accumulate(grid, contribs, 1, strips)
    assert sums[0, 5, 0] == np.float32(1.25) and weights[5, 0] == 2
    assert sums[0, 0, 0] == np.float32(0.25) and sums[0, 10, 0] == 1


def test_blend_strip_refuses_windows_out_of_order():
    plan = make_plan(40, 20, tile=10, overlap=2, batch_size=2)
    results = fake_results(plan, 2, 0)
    batches = list(reversed([results[b] for b in plan.strip_batches(plan.strips[0])]))
    with pytest.raises(ValueError, match="in order"):
        blend_strip(plan.grid, plan.strips[0], batches, 2, "gaussian", Finish(255, "uint8"))


def blended(plan, results, k, finish, backend, as_tensor=False):
    import torch

    from geoseg.core.plan import BatchResult as Result

    def moved(res):
        if res.probs is None or not as_tensor:
            return res
        return Result(
            res.indices, res.valid, torch.from_numpy(res.probs).to(backend.device), res.run
        )

    strips = (
        blend_strip(
            plan.grid,
            s,
            [moved(results[b]) for b in plan.strip_batches(s)],
            k,
            plan.blend,
            finish,
            backend,
        )
        for s in plan.strips
    )
    return list(ordered_rows(strips, finish))


def test_a_torch_backend_blends_like_numpy():
    # the GPU path's code (torch sums, argmax on the device) run on the CPU's torch
    from geoseg.core.backend import HOST, Backend

    plan = make_plan(97, 61, tile=16, overlap=5, batch_size=3, strip_rows=2)
    results = fake_results(plan, 4, 1)
    finish = Finish(255, "uint8", probabilities=True, confidence="margin")
    ref = blended(plan, results, 4, finish, HOST)
    got = blended(plan, results, 4, finish, Backend("cpu"), as_tensor=True)
    for a, b in zip(ref, got, strict=True):
        assert isinstance(b.classes, np.ndarray) and b.classes.dtype == np.uint8
        assert np.array_equal(a.classes, b.classes)
        assert np.abs(a.probs.astype(int) - b.probs.astype(int)).max() <= 1  # uint8 rounding
        assert np.abs(a.confidence.astype(int) - b.confidence.astype(int)).max() <= 1


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(),
    reason="no CUDA GPU on this machine: the on-GPU accumulation and argmax run only with one",
)
def test_cuda_backend_blends_like_numpy_and_hands_over_host_class_ids():
    from geoseg.core.backend import HOST, Backend

    plan = make_plan(120, 90, tile=16, overlap=5, batch_size=4, strip_rows=2)
    results = fake_results(plan, 3, 2)
    finish = Finish(255, "uint8")
    ref = blended(plan, results, 3, finish, HOST)
    got = blended(plan, results, 3, finish, Backend("cuda"), as_tensor=True)
    classes = np.concatenate([p.classes for p in got])
    assert classes.dtype == np.uint8
    agree = (classes == np.concatenate([p.classes for p in ref])).mean()
    assert agree >= 0.999  # the GPU's float rounding may flip a near tie
