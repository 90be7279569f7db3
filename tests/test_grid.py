import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.blend import nearest_centre_spans, window_weights
from tilers.grid import Grid, TilingError, Window, axis_count, axis_starts, blocks

sizes = st.integers(1, 400)
tiles = st.integers(1, 128)


@st.composite
def grids(draw):
    h, w = draw(sizes), draw(sizes)
    th, tw = draw(tiles), draw(tiles)
    oh = draw(st.integers(0, th - 1))
    ow = draw(st.integers(0, tw - 1))
    return Grid.create(h, w, (th, tw), (oh, ow))


@settings(max_examples=150, deadline=None)
@given(grids())
def test_every_pixel_is_covered(grid):
    cover = np.zeros((grid.height, grid.width), np.int32)
    for w in grid:
        r, c = grid.clipped(w).slices()
        cover[r, c] += 1
    assert cover.min() >= 1


@settings(max_examples=150, deadline=None)
@given(grids())
def test_windows_stay_inside_unless_the_raster_is_smaller_than_a_tile(grid):
    for w in grid:
        assert w.row >= 0 and w.col >= 0
        if grid.height >= grid.tile[0]:
            assert w.row_stop <= grid.height
        else:
            assert w.row == 0 and len(grid.row_starts) == 1
        if grid.width >= grid.tile[1]:
            assert w.col_stop <= grid.width
        else:
            assert w.col == 0 and len(grid.col_starts) == 1


@settings(max_examples=100, deadline=None)
@given(grids())
def test_last_window_ends_on_the_edge_and_stride_is_regular(grid):
    for size, tile, starts, stride in (
        (grid.height, grid.tile[0], grid.row_starts, grid.stride[0]),
        (grid.width, grid.tile[1], grid.col_starts, grid.stride[1]),
    ):
        if size >= tile:
            assert starts[-1] + tile == size
        steps = np.diff(starts)
        assert (steps[:-1] == stride).all() if len(steps) > 1 else True
        assert (steps > 0).all() and (steps <= stride).all()


@settings(max_examples=50, deadline=None)
@given(grids())
def test_grid_is_deterministic(grid):
    again = Grid.create(grid.height, grid.width, grid.tile, grid.overlap)
    assert list(again) == list(grid)
    assert [grid.window(i) for i in range(len(grid))] == list(grid)


@settings(max_examples=100, deadline=None)
@given(grids().filter(lambda g: len(g) <= 2000))
def test_crop_blending_owns_each_pixel_exactly_once(grid):
    total = np.zeros((grid.height, grid.width), np.float32)
    for i, w in enumerate(grid):
        clip = grid.clipped(w)
        r, c = clip.slices()
        total[r, c] += window_weights(grid, i, "crop")[: clip.height, : clip.width]
    assert (total == 1).all()


def test_bands_partition_rows_and_are_final_after_their_grid_row():
    grid = Grid.create(1000, 300, 256, 64)
    bands = [grid.band(g) for g in range(grid.shape[0])]
    assert bands[0][0] == 0 and bands[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:], strict=False))
    for g, (r0, _) in enumerate(bands):
        later = [s for s in grid.row_starts[g + 1 :]]
        assert all(s >= bands[g][1] for s in later)
        assert r0 == grid.row_starts[g]


def test_axis_starts_examples():
    assert axis_starts(1000, 512, 384) == (0, 384, 488)
    assert axis_starts(512, 512, 384) == (0,)
    assert axis_starts(100, 512, 384) == (0,)
    assert axis_starts(896, 512, 384) == (0, 384)


@pytest.mark.parametrize(
    "tile,overlap,match",
    [
        (512, 512, "smaller than --tile"),
        (512, 600, "smaller"),
        (512, -1, "negative"),
        (0, 0, "positive"),
    ],
)
def test_bad_tiling_is_a_config_error(tile, overlap, match):
    with pytest.raises(TilingError, match=match):
        Grid.create(100, 100, tile, overlap)


def test_blocks_cover_the_raster():
    bl = blocks(1000, 700, 256)
    assert bl[0] == Window(0, 0, 256, 256) and bl[-1] == Window(768, 512, 232, 188)
    assert sum(b.height * b.width for b in bl) == 1000 * 700


def test_nearest_centre_spans_partition():
    spans = nearest_centre_spans((0, 384, 488), 512, 1000)
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


@given(st.integers(1, 5000), st.integers(1, 600), st.data())
def test_axis_count_is_the_number_of_starts(size, tile, data):
    stride = data.draw(st.integers(1, tile))
    assert axis_count(size, tile, stride) == len(axis_starts(size, tile, stride))


def test_absurd_window_counts_are_refused_before_planning():

    with pytest.raises(TilingError, match="windows, more than"):
        Grid.create(10_000_000, 10_000_000, 512, 128)


def test_tilers_import_nothing_from_geoseg():
    import ast
    from pathlib import Path

    import tilers

    for path in Path(tilers.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "geoseg" for n in names), (path, names)
