"""Photometric chip augmentations: what each one keeps and what it changes."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.train.augment import (
    AugmentSpec,
    augment,
    colour,
    gaussian_blur,
    hue_rotation,
)


def test_hue_rotation_keeps_grey_and_turns_the_colour_wheel():
    assert np.allclose(hue_rotation(0.0), np.eye(3))
    grey = np.array([0.3, 0.3, 0.3], np.float32)
    assert np.allclose(hue_rotation(1.234) @ grey, grey, atol=1e-6)
    red, green = np.array([1, 0, 0], np.float32), np.array([0, 1, 0], np.float32)
    assert np.allclose(hue_rotation(2 * np.pi / 3) @ red, green, atol=1e-6)
    rot = hue_rotation(0.7)
    assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-6)  # a rotation: lengths kept


def test_colour_changes_only_what_is_asked():
    rng = np.random.default_rng(0)
    img = rng.random((3, 16, 16), dtype=np.float32)
    same = colour(img, np.random.default_rng(1), AugmentSpec())
    assert np.array_equal(same, img)
    grey = np.repeat(img[:1], 3, axis=0)
    for spec in (AugmentSpec(saturation=0.5), AugmentSpec(hue=0.5)):
        assert np.allclose(colour(grey, np.random.default_rng(2), spec), grey, atol=1e-6)
        assert not np.allclose(colour(img, np.random.default_rng(2), spec), img)
    g = colour(np.array([0.0, 1.0, 0.25], np.float32).reshape(3, 1, 1),
               np.random.default_rng(3), AugmentSpec(gamma=0.5))  # fmt: skip
    assert g[0, 0, 0] == 0 and g[1, 0, 0] == pytest.approx(1) and g[2, 0, 0] != 0.25


def test_hue_leaves_extra_bands_and_skips_single_band_images():
    rng = np.random.default_rng(0)
    img = rng.random((4, 8, 8), dtype=np.float32)
    out = colour(img, np.random.default_rng(1), AugmentSpec(hue=0.5))
    assert np.array_equal(out[3], img[3]) and not np.allclose(out[:3], img[:3])
    one = img[:1]
    spec = AugmentSpec(hue=0.5, saturation=0.5)
    assert np.array_equal(colour(one, np.random.default_rng(1), spec), one)


def test_gaussian_blur_keeps_constants_and_smooths_edges():
    flat = np.full((2, 20, 20), 3.0, np.float32)
    assert np.allclose(gaussian_blur(flat, 1.0), flat)
    edge = np.zeros((1, 20, 20), np.float32)
    edge[:, :, 10:] = 1
    out = gaussian_blur(edge, 1.0)
    assert out.shape == edge.shape and 0 < out[0, 5, 9] < 0.5 < out[0, 5, 10] < 1
    assert out[0, 5, 0] == pytest.approx(0) and out[0, 5, 19] == pytest.approx(1)


def test_augment_is_seeded_and_noise_is_zero_mean():
    img = np.zeros((3, 32, 32), np.float32)
    mask = np.zeros((32, 32), np.int64)
    spec = AugmentSpec(noise=0.2, blur=1.0)
    a, _ = augment(img, mask, spec, np.random.default_rng(5))
    b, _ = augment(img, mask, spec, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.std() > 0 and abs(a.mean()) < 0.05
