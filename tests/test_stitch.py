import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.blend import BLEND_MODES, window_weights
from geoseg.core.stitch import Stitcher, normalize_sums, to_classes
from geoseg.core.strips import reference_accumulate
from tilers.grid import Grid


def _contributions(grid, k, seed, holes=()):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(len(grid)):
        if i in holes:
            continue
        p = rng.random((k, *grid.tile), dtype=np.float32)
        p /= p.sum(0, keepdims=True)
        w = np.array(window_weights(grid, i, "gaussian"))
        w[: rng.integers(0, 3), :] = 0  # some nodata rows
        out.append((i, p, w))
    return out


def _streamed(grid, contribs, k):
    st_ = Stitcher(grid, k)
    sums = np.zeros((k, grid.height, grid.width), np.float32)
    wsum = np.zeros((grid.height, grid.width), np.float32)
    by_row = {}
    for i, p, w in contribs:
        by_row.setdefault(grid.row_of(i), []).append((i, p, w))
    max_rows = 0
    for g in range(grid.shape[0]):
        for i, p, w in by_row.get(g, []):
            st_.add(i, p, w)
            max_rows = max(max_rows, st_.open_rows)
        pieces = st_.pop_band(g)
        assert (pieces[0].row0, pieces[-1].row1) == grid.band(g)
        for a, b in zip(pieces, pieces[1:], strict=False):
            assert a.row1 == b.row0  # contiguous, top to bottom
        for band in pieces:
            sums[:, band.row0 : band.row1] = band.sums
            wsum[band.row0 : band.row1] = band.weights
    return sums, wsum, max_rows


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile=st.integers(4, 40),
    ov=st.integers(0, 39),
    k=st.integers(1, 4),
    seed=st.integers(0, 5),
)
def test_streamed_equals_naive_full_array_reference_bit_for_bit(h, w, tile, ov, k, seed):
    ov = ov % tile
    grid = Grid.create(h, w, tile, ov)
    contribs = _contributions(grid, k, seed, holes={1})
    ref_s, ref_w = reference_accumulate(grid, contribs, k)
    s, ws, max_rows = _streamed(grid, contribs, k)
    assert np.array_equal(s, ref_s)
    assert np.array_equal(ws, ref_w)
    assert max_rows <= min(h, tile)  # only the rows under one grid row of windows


def test_out_of_order_add_is_refused():
    grid = Grid.create(50, 50, 20, 5)
    st_ = Stitcher(grid, 2)
    p = np.ones((2, 20, 20), np.float32)
    w = np.ones((20, 20), np.float32)
    st_.add(3, p, w)
    with pytest.raises(ValueError, match="in order"):
        st_.add(2, p, w)


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_constant_probabilities_survive_blending(mode):
    grid = Grid.create(70, 45, 16, 6)
    p = np.zeros((3, 16, 16), np.float32)
    p[2] = 1.0
    contribs = [(i, p, window_weights(grid, i, mode)) for i in range(len(grid))]
    s, w = reference_accumulate(grid, contribs, 3)
    probs = normalize_sums(s, w)
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    assert (to_classes(probs, w, 255, "uint8") == 2).all()


def test_unweighted_pixels_become_nodata():
    probs = np.full((2, 3, 3), 0.5, np.float32)
    weights = np.ones((3, 3), np.float32)
    weights[1, 1] = 0
    classes = to_classes(probs, weights, 255, "uint8")
    assert classes[1, 1] == 255 and (classes[weights > 0] == 0).all()


@settings(max_examples=60, deadline=None)
@given(
    k=st.sampled_from([1, 2, 6, 256, 300]),
    h=st.integers(1, 40),
    w=st.integers(1, 9),
    chunk=st.integers(1, 50),
    levels=st.integers(1, 4),
    seed=st.integers(0, 10**6),
)
def test_to_classes_equals_argmax_with_ties_and_nodata(k, h, w, chunk, levels, seed):
    from geoseg.core.plan import class_dtype

    rng = np.random.default_rng(seed)
    probs = rng.integers(0, levels, (k, h, w)).astype(np.float32)  # few levels: many ties
    weights = rng.integers(0, 3, (h, w)).astype(np.float32)
    dtype, nodata = class_dtype(k)
    expected = np.argmax(probs, axis=0).astype(dtype)
    expected[weights <= 0] = nodata
    got = to_classes(probs, weights, nodata, dtype, chunk_rows=chunk)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expected)
