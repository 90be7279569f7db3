"""Per-band histogram matching (geoseg.core.histogram)."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.core import histogram as hist
from geoseg.errors import CheckpointError


def test_quantiles_of_valid_pixels_only():
    img = np.zeros((2, 10, 10), np.float32)
    img[:, :5] = 1.0
    valid = np.zeros((10, 10), bool)
    valid[:5] = True  # only the ones
    q = hist.band_quantiles([img], [valid])
    assert len(q) == 2 and len(q[0]) == len(hist.LEVELS)
    assert q[0][0] == q[0][-1] == 1.0
    with pytest.raises(ValueError, match="no valid pixel"):
        hist.band_quantiles([img], [np.zeros((10, 10), bool)])
    with pytest.raises(ValueError, match="finite"):
        hist.band_quantiles([np.full((1, 2, 2), np.nan, np.float32)])


def test_large_inputs_are_subsampled_evenly(monkeypatch):
    monkeypatch.setattr(hist, "MAX_SAMPLES", 1000)
    ramp = np.arange(100_000, dtype=np.float32).reshape(1, 100, 1000)
    q = hist.band_quantiles([ramp])[0]
    assert q[0] == 0 and abs(q[32] - 50_000) < 200 and q[-1] > 99_000


def test_matching_maps_one_distribution_onto_another():
    rng = np.random.default_rng(0)
    src = rng.gamma(2.0, 0.1, (3, 300, 300)).astype(np.float32)
    dst = (rng.random((3, 300, 300)) ** 2).astype(np.float32)
    qs, qd = hist.band_quantiles([src]), hist.band_quantiles([dst])
    mapped = hist.match_histograms(src, qs, qd)
    assert mapped.dtype == np.float32 and mapped.shape == src.shape
    err = np.abs(np.asarray(hist.band_quantiles([mapped])) - np.asarray(qd)).max()
    assert err < 1e-3
    order = np.argsort(src[0].ravel())  # monotone: the order of values is kept
    assert (np.diff(mapped[0].ravel()[order]) >= -1e-6).all()


def test_values_beyond_the_extremes_are_shifted_not_clipped():
    levels = hist.LEVELS
    src = [list(levels)]  # 0..1
    dst = [list(levels * 2 + 10)]  # 10..12
    x = np.array([[[-0.5, 0.5, 1.5]]], np.float32)
    out = hist.match_histograms(x, src, dst)
    assert out[0, 0].tolist() == pytest.approx([9.5, 11.0, 12.5])


def test_flat_stretches_of_the_source_are_merged():
    src = [[0.0] * 40 + list(np.linspace(0, 1, 25))]
    dst = [list(hist.LEVELS)]
    out = hist.match_histograms(np.zeros((1, 1, 1), np.float32), src, dst)
    assert np.isfinite(out).all() and 0 <= out[0, 0, 0] <= dst[0][40]


@pytest.mark.parametrize(
    "value, words",
    [
        ([[0.0] * 65], "1 bands"),
        ([[0.0] * 64, [0.0] * 65], "band 1 is not 65"),
        ([list(hist.LEVELS)[::-1]] * 2, "decrease"),
        ([[float("nan")] * 65] * 2, "finite"),
        ("x", "str bands"),
    ],
)
def test_checked_quantiles(value, words):
    with pytest.raises(ValueError, match=words):
        hist.check_quantiles(value, 2, "q")


def test_a_checkpoint_with_bad_histograms_is_refused():
    import tempfile

    from helpers import make_checkpoint

    from geoseg.model.checkpoint import read_meta

    with tempfile.TemporaryDirectory() as tmp:
        meta = read_meta(make_checkpoint(f"{tmp}/m"))
    with pytest.raises(CheckpointError, match="decrease"):
        meta.replace(quantiles=[list(hist.LEVELS)[::-1]] * 3)
    with pytest.raises(CheckpointError, match="nothing to match"):
        meta.replace(input_quantiles=[list(hist.LEVELS)] * 3)
    ok = meta.replace(quantiles=[list(hist.LEVELS)] * 3, input_quantiles=[list(hist.LEVELS)] * 3)
    assert ok.input_quantiles == ok.quantiles
