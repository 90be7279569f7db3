"""The seam metric of benchmarks/bench_seams.py: label changes across cut lines vs elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import load_benchmark

bench_seams = load_benchmark("bench_seams")
seam_ratio = bench_seams.seam_ratio


def test_change_on_the_cut_gives_a_high_ratio():
    classes = np.zeros((64, 64), np.uint8)
    classes[:, 32:] = 1  # one vertical edge, exactly on column cut 32
    boundary, other, ratio = seam_ratio(classes, [16, 48], [32])
    assert boundary > 0 and other == 0 and ratio == math.inf
    classes[40:, :] = 2 - classes[40:, :]  # plus a change off the cuts (row 40): finite, high
    boundary, other, ratio = seam_ratio(classes, [16, 48], [32])
    assert 0 < other < boundary and ratio > 10


def test_map_unrelated_to_the_cuts_gives_about_one():
    classes = np.random.default_rng(0).integers(0, 5, (512, 512))
    cuts = list(range(64, 512, 64))
    boundary, other, ratio = seam_ratio(classes, cuts, cuts)
    assert boundary == pytest.approx(0.8, abs=0.02)
    assert ratio == pytest.approx(1.0, abs=0.05)


def test_constant_map_is_one_and_no_cut_is_nan():
    classes = np.full((32, 32), 3, np.uint8)
    assert seam_ratio(classes, [8, 16], [8]) == (0.0, 0.0, 1.0)
    boundary, other, ratio = seam_ratio(classes, [], [])  # a single window: no pairs on a cut
    assert math.isnan(boundary) and other == 0.0 and math.isnan(ratio)


def test_nodata_pairs_are_left_out():
    classes = np.zeros((16, 16), np.uint8)
    classes[:, 8:] = 255  # the change on cut 8 is into nodata; cut 4 has data on both sides
    assert seam_ratio(classes, [], [4, 8], nodata=255) == (0.0, 0.0, 1.0)
    assert seam_ratio(classes, [], [4, 8])[2] == math.inf


def test_cuts_outside_the_raster_are_refused():
    with pytest.raises(ValueError, match="cuts along axis 1"):
        seam_ratio(np.zeros((8, 8)), [4], [8])


def test_cut_lines_follow_the_grid():
    from tilers.grid import Grid

    grid = Grid.create(500, 200, 256, 64)  # rows start 0, 192, 244; one column window
    rows, cols = bench_seams.cut_lines(grid, "gaussian")
    assert rows == [192, 244, 256, 448] and cols == []
    rows, _ = bench_seams.cut_lines(grid, "crop")
    assert rows == [224, 346]
