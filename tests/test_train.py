"""geoseg train: config, sampling, augmentation, losses, the loop, exact resume, the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from train_helpers import PALETTE, write_config, write_folder  # noqa: E402

import cli  # noqa: E402
from geoseg.core.labels import check_ids, rgb_to_ids  # noqa: E402
from geoseg.errors import ConfigError, LabelError  # noqa: E402
from geoseg.train import chips, stats  # noqa: E402
from geoseg.train.augment import dihedral, photometric  # noqa: E402
from geoseg.train.config import build_train_config  # noqa: E402
from geoseg.train.loop import lr_at  # noqa: E402


# ----------------------------------------------------------------------------- pure parts
def test_config_layers_and_checks():
    cfg = build_train_config({"loss": "ce+dice", "epochs": 3}, {"epochs": 5, "lr": None})
    assert cfg.loss == ("ce", "dice") and cfg.epochs == 5 and cfg.lr == 1e-3
    with pytest.raises(ConfigError, match="combine ce, dice, focal, lovasz"):
        build_train_config({"loss": "ce+hinge"})
    with pytest.raises(ConfigError, match="unknown training option 'epoch'"):
        build_train_config({"epoch": 3})
    a = build_train_config({"epochs": 3, "device": "cpu"})
    b = build_train_config({"epochs": 3, "device": "auto"})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() == build_train_config({"epochs": 4}).fingerprint()
    assert a.fingerprint() != build_train_config({"epochs": 3, "lr": 0.1}).fingerprint()
    from geoseg.train.config import config_changes

    assert config_changes(a.to_dict(), build_train_config({"epochs": 9, "lr": 0.1}).to_dict()) == [
        "lr"
    ]


def test_rgb_to_ids_palette_and_unknown_colour():
    rgb = np.array([[[0, 0, 255], [255, 0, 0]], [[0, 0, 0], [255, 255, 0]]], np.uint8)
    ids = rgb_to_ids(rgb, list(PALETTE.values()), [(0, 0, 0)], 255)
    assert ids.tolist() == [[0, 2], [255, 1]]
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(LabelError, match="#010203"):
        rgb_to_ids(rgb, list(PALETTE.values()), [(0, 0, 0)], 255, "m.png")


def test_check_ids_rejects_ids_outside_class_set():
    assert check_ids(np.array([[0, 2, 255]]), 3, 255, "x").dtype == np.int64
    with pytest.raises(LabelError, match="label id 7 is outside the class set 0..2"):
        check_ids(np.array([[0, 7]]), 3, 255, "x")


def test_grid_chips_cover_every_pixel():
    shapes = [(70, 45), (20, 30)]
    refs = chips.grid_chips(shapes, 32, overlap=8)
    for i, (h, w) in enumerate(shapes):
        cover = np.zeros((h, w), bool)
        for r in (r for r in refs if r.index == i):
            assert r.row >= 0 and r.col >= 0
            assert r.row + r.size <= max(h, r.size) and r.col + r.size <= max(w, r.size)
            cover[r.row : r.row + r.size, r.col : r.col + r.size] = True
        assert cover.all()


def test_random_and_balanced_chips_are_seeded_and_inside():
    shapes = [(64, 80), (40, 40)]
    a = chips.random_chips(shapes, 32, 20, np.random.default_rng(3), (0.5, 1.5))
    b = chips.random_chips(shapes, 32, 20, np.random.default_rng(3), (0.5, 1.5))
    assert a == b
    assert {r.size for r in a} != {32}
    mask = np.zeros((64, 80), np.int64)
    mask[50:54, 70:74] = 1  # a rare class in a corner
    index = chips.ClassIndex.build([mask, np.zeros((40, 40), np.int64)], 2)
    refs = chips.balanced_chips(shapes, index, 16, 200, np.random.default_rng(0))
    hits = [r for r in refs if (chips.cut(mask, r, 255) == 1).any()] if refs else []
    assert len(hits) > 60  # ~half the chips target class 1 (random draws would give ~2)


def test_cut_pads_with_fill():
    arr = np.arange(12).reshape(3, 4)
    out = chips.cut(arr, chips.ChipRef(0, 1, 2, 4), 255)
    assert out[:2, :2].tolist() == [[6, 7], [10, 11]] and (out[2:] == 255).all()


def test_dihedral_keeps_image_and_mask_paired():
    img = np.arange(2 * 5 * 5).reshape(2, 5, 5)
    mask = img[0].copy()
    for k in range(4):
        for flip in (False, True):
            a, m = dihedral(img, mask, k, flip)
            assert (a[0] == m).all()


def test_photometric_per_band_differs():
    img = np.ones((3, 4, 4), np.float32)
    same = photometric(img, np.random.default_rng(0), 0.5, 0.5, per_band=False)
    per = photometric(img, np.random.default_rng(0), 0.5, 0.5, per_band=True)
    assert np.unique(same[:, 0, 0]).size == 1 and np.unique(per[:, 0, 0]).size == 3


def test_lr_schedules():
    assert lr_at(0, 100, 1.0, "cosine") == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, "cosine") == pytest.approx(0.0, abs=1e-9)
    assert lr_at(4, 100, 1.0, "cosine", warmup=10) == pytest.approx(0.5)
    peak = max(range(100), key=lambda s: lr_at(s, 100, 1.0, "onecycle"))
    assert 20 <= peak <= 40 and lr_at(99, 100, 1.0, "onecycle") < 0.01


def test_band_stats_and_class_weights():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (3, 10, 12)).astype(np.uint8) for _ in range(3)]
    mean, std = stats.band_stats(imgs, scale=255.0)
    allpix = np.concatenate([i.reshape(3, -1) for i in imgs], 1) / 255.0
    np.testing.assert_allclose(mean, allpix.mean(1), rtol=1e-6)
    np.testing.assert_allclose(std, allpix.std(1), rtol=1e-6)
    w = stats.median_frequency_weights(np.array([900, 90, 10, 0]))
    assert w[2] > w[1] > w[0] and w[3] == 0


def test_losses_ignore_index():
    import torch

    from geoseg.train.losses import make_loss

    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    for names in (["ce"], ["dice"], ["focal"], ["lovasz"], ["ce", "dice"]):
        loss = make_loss(names)
        t2 = target.clone()
        t2[:, :4] = 255
        l2 = loss(logits, t2)
        logits2 = logits.clone()
        logits2[:, :, :4] = 100.0 * torch.randn(2, 3, 4, 8)  # changes only ignored pixels
        assert torch.isfinite(l2)
        assert float(loss(logits2, t2)) == pytest.approx(float(l2), rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture
def tiny(tmp_path):
    data = write_folder(tmp_path / "data", n=4)
    return data, write_config(tmp_path / "train.yaml", data)


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def test_train_cli_writes_checkpoints_log_and_stats(tiny, tmp_path):
    from geoseg.io.images import read_image
    from geoseg.model.checkpoint import load_checkpoint

    data, cfg = tiny
    out = tmp_path / "run"
    res = CliRunner().invoke(
        cli.cli,
        ["train", "--config", str(cfg), "--out", str(out), "--no-progress", "--loss", "ce+dice"],
    )
    assert res.exit_code == 0, res.output
    assert "val mIoU" in res.output and "best checkpoint" in res.output
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,train_loss,val_miou,iou_Sea")
    assert len(rows) == 3
    model, meta = load_checkpoint(out / "best")
    assert meta.class_names == list(PALETTE) and meta.tile_size == 32
    imgs = [read_image(p) for p in sorted((data / "images").glob("part_00[0-2].png"))]
    mean, std = stats.band_stats(imgs, scale=255.0)
    np.testing.assert_allclose(meta.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(meta.std, std, rtol=1e-6)
    assert meta.extra["val_samples"] == ["data/part_003"]
    assert 0.0 <= meta.extra["val_miou"] <= 1.0
    assert json.loads((out / "config.json").read_text())["config"]["loss"] == ["ce", "dice"]


class _Interrupt(Exception):
    pass


def test_resume_is_exact(tiny, tmp_path):
    from geoseg.config import load_yaml
    from geoseg.train.config import build_train_config
    from geoseg.train.loop import Callbacks
    from geoseg.train.session import run_training

    _, cfg_path = tiny
    full, part = tmp_path / "full", tmp_path / "part"
    args = ["--config", str(cfg_path), "--no-progress", "-q"]
    assert CliRunner().invoke(cli.cli, ["train", *args, "--out", str(full)]).exit_code == 0

    def stop(row):
        raise _Interrupt  # the run dies right after epoch 1 was saved

    cfg = build_train_config(load_yaml(cfg_path))
    with pytest.raises(_Interrupt):
        run_training(cfg, str(part), callbacks=Callbacks(on_epoch=stop))
    assert len((part / "log.csv").read_text().splitlines()) == 2
    r = CliRunner().invoke(cli.cli, ["train", *args, "--out", str(part), "--resume"])
    assert r.exit_code == 0, r.output
    a, b = _weights(full / "last"), _weights(part / "last")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert _log(full) == _log(part)


def _log(run):
    import csv

    rows = list(csv.DictReader((run / "log.csv").open()))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_seeded_runs_repeat_and_seed_matters(tiny, tmp_path):
    _, cfg = tiny
    args = ["train", "--config", str(cfg), "--no-progress", "-q", "--epochs", "1"]
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        r = CliRunner().invoke(cli.cli, [*args, "--seed", seed, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    a, b, c = (_weights(tmp_path / n / "last") for n in "abc")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    "arch,options",
    [
        ("fpn", {}),
        ("linknet", {}),
        ("deeplabv3plus", {}),
        ("unetplusplus", {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}),
    ],
)
def test_any_smp_architecture_trains_one_step(arch, options):
    import torch

    from geoseg.model.checkpoint import build_model
    from geoseg.train.losses import make_loss
    from geoseg.train.session import fresh_meta
    from geoseg.train.sources import Sample

    cfg = build_train_config(
        {
            "arch": arch,
            "encoder": "tu-resnet10t",
            "model_options": options,
            "classes": list(PALETTE),
            "chip_size": 64,
        }
    )
    img, ids = __import__("train_helpers").scene(64, 64, 0)
    meta = fresh_meta(cfg, [Sample("a", img, ids)], {})
    model = build_model(meta)
    x = torch.from_numpy(((img / 255.0 - 0.5) / 0.2).astype(np.float32))[None].repeat(2, 1, 1, 1)
    y = torch.from_numpy(ids)[None].repeat(2, 1, 1)
    loss = make_loss(["ce", "lovasz"])(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and meta.arch == arch


def test_train_shows_the_steps_and_the_validation_as_they_run(tiny, tmp_path):
    from train_helpers import run_cli

    _, cfg = tiny
    r = run_cli("train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "epoch 1" in r.stderr and "steps" in r.stderr  # the training bar
    assert "validation" in r.stderr and "images" in r.stderr  # the validation bar
