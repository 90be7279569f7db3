import bisect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.blend import BLEND_MODES, window_weights
from geoseg.core.stitch import Stitcher, normalize_sums, to_classes
from geoseg.core.strips import reference_accumulate
from tilers.grid import Grid, Window


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


def _streamed(grid, contribs, k, cell_cols, whole=()):
    """Sum with one stitcher; check each cell is handed over once, when no later window hits it."""
    st_ = Stitcher(grid, k, whole=whole, cell_cols=cell_cols)
    sums = np.zeros((k, grid.height, grid.width), np.float32)
    wsum = np.zeros((grid.height, grid.width), np.float32)
    covered = np.zeros((grid.height, grid.width), np.int32)
    added = [i for i, _, _ in contribs]
    max_held = 0

    def take(cells, after):
        for cell in cells:
            rows, cols = slice(cell.row0, cell.row1), slice(cell.col0, cell.col1)
            for j in added[after:]:  # no later window touches a handed-over cell
                assert (
                    grid.clipped(grid.window(j)).intersection(
                        Window(cell.row0, cell.col0, cell.row1 - cell.row0, cell.col1 - cell.col0)
                    )
                    is None
                )
            sums[:, rows, cols] = cell.sums
            wsum[rows, cols] = cell.weights
            covered[rows, cols] += 1

    given = {i: (p, w) for i, p, w in contribs}
    for i in range(len(grid)):  # a window without a contribution (all nodata) is passed over
        if i in given:
            st_.add(i, *given[i])
            max_held = max(max_held, st_.held_pixels)
        take(list(st_.final(i)), bisect.bisect_right(added, i))
    take(list(st_.rest()), len(added))
    assert st_.held_pixels == 0
    assert covered.max() <= 1  # every pixel in at most one cell
    return sums, wsum, max_held


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile=st.integers(4, 40),
    ov=st.integers(0, 39),
    k=st.integers(1, 4),
    seed=st.integers(0, 5),
    cell_cols=st.integers(1, 50),
)
def test_streamed_equals_naive_full_array_reference_bit_for_bit(h, w, tile, ov, k, seed, cell_cols):
    ov = ov % tile
    grid = Grid.create(h, w, tile, ov)
    contribs = _contributions(grid, k, seed, holes={1})
    ref_s, ref_w = reference_accumulate(grid, contribs, k)
    s, ws, max_held = _streamed(grid, contribs, k, cell_cols)
    assert np.array_equal(s, ref_s)
    assert np.array_equal(ws, ref_w)
    # the overlap rows of two grid rows at full width, and the cells under one window
    th, starts = min(h, tile), grid.row_starts
    shared = max([a + th - b for a, b in zip(starts, starts[1:], strict=False)], default=0)
    assert max_held <= 2 * shared * w + th * min(w, 2 * cell_cols + tile)


def test_whole_rows_are_one_cell_each_and_zero_where_no_window_reached():
    grid = Grid.create(60, 70, 20, 5)  # row starts 0, 15, 30, 40
    contribs = [c for c in _contributions(grid, 2, 0) if c[0] != 0]
    st_ = Stitcher(grid, 2, whole=[(0, 15)], cell_cols=8)
    cells = []
    for i, p, w in contribs:
        st_.add(i, p, w)
        cells += st_.final(i)
    cells += st_.rest()
    assert all(c.col1 - c.col0 <= 8 for c in cells if c.row0 >= 15)
    top = [c for c in cells if c.row1 <= 15]
    assert [(c.row0, c.row1, c.col0, c.col1) for c in top] == [(0, 15, 0, 70)]
    assert (top[0].weights[:, :15] == 0).all()  # window 0 was not added: nodata there


def test_windows_outside_its_grid_rows_are_refused():
    grid = Grid.create(50, 50, 20, 5)
    st_ = Stitcher(grid, 2, grid_rows=(1, 2))
    p = np.ones((2, 20, 20), np.float32)
    w = np.ones((20, 20), np.float32)
    with pytest.raises(ValueError, match="not in grid rows 1 to 1"):
        st_.add(0, p, w)


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
