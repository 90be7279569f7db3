"""geoseg finetune (new head, frozen encoder) and geoseg adapt (stats, adabn, tent, ST)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_geotiff  # noqa: E402
from train_helpers import run_cli, scene, write_config, write_folder  # noqa: E402

import cli  # noqa: E402
from geoseg.errors import ConfigError  # noqa: E402
from geoseg.model.checkpoint import load_checkpoint  # noqa: E402
from geoseg.train import adapt as ad  # noqa: E402
from geoseg.train.finetune import class_mapping  # noqa: E402


@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    """A tiny model trained for one epoch on the toy source domain."""
    tmp = tmp_path_factory.mktemp("src")
    data = write_folder(tmp / "data", n=4)
    cfg = write_config(tmp / "train.yaml", data, epochs=1)
    r = CliRunner().invoke(
        cli.cli, ["train", "--config", str(cfg), "--out", str(tmp / "run"), "--no-progress", "-q"]
    )
    assert r.exit_code == 0, r.output
    return tmp / "run" / "best", data


@pytest.fixture(scope="module")
def target_rasters(tmp_path_factory):
    """Unlabelled rasters of a 'new region': brighter, different contrast."""
    tmp = tmp_path_factory.mktemp("tgt")
    paths = []
    for i in range(2):
        img, _ = scene(64, 64, 10 + i)
        img = np.clip(img.astype(np.float32) * 0.6 + 70, 0, 255).astype(np.uint8)
        paths.append(str(write_geotiff(tmp / f"t{i}.tif", img)))
    return paths


def _w(path):
    from safetensors.numpy import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def test_class_mapping():
    assert class_mapping(["a", "b", "c"], ["c", "a"], {}) == {0: [2], 1: [0]}
    assert class_mapping(["a", "b", "c"], ["ab", "c"], {"a": "ab", "b": "ab", "c": "c"}) == {
        0: [0, 1],
        1: [2],
    }
    with pytest.raises(ConfigError, match="'z' is not a class of the checkpoint"):
        class_mapping(["a"], ["b"], {"z": "b"})


def test_finetune_new_classes_and_frozen_encoder(source_model, tmp_path):
    ckpt, data = source_model
    cfg = write_config(
        tmp_path / "ft.yaml",
        data,
        epochs=1,
        classes=[
            {"name": "Water", "colour": [0, 0, 255]},
            {"name": "Land", "colour": [255, 255, 0]},
        ],
        ignore_colours=["#000000", "#FF0000"],
    )
    out = tmp_path / "ft"
    r = CliRunner().invoke(
        cli.cli,
        [
            "finetune",
            "--model",
            str(ckpt),
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--freeze-encoder",
            "--class-map",
            "Sea=Water",
            "--class-map",
            "Sand=Land",
            "--class-map",
            "Town=Land",
            "--no-progress",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    model, meta = load_checkpoint(out / "last")
    src_model, src_meta = load_checkpoint(ckpt)
    assert meta.class_names == ["Water", "Land"] and meta.classes == 2
    assert meta.mean == src_meta.mean  # the source normalization is kept
    assert meta.extra["finetuned_from"] == str(ckpt)
    old, new = _w(ckpt), _w(out / "last")
    enc = [k for k in old if k.startswith("encoder.")]
    assert enc and all(np.array_equal(old[k], new[k]) for k in enc)  # frozen, BN stats too
    dec = [k for k in old if k.startswith("decoder.") and k in new]
    assert any(not np.array_equal(old[k], new[k]) for k in dec)  # the decoder trained


def test_finetune_band_mismatch(source_model, tmp_path):
    from PIL import Image

    ckpt, _ = source_model
    data = tmp_path / "gray"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    img, ids = scene(32, 32, 0)
    Image.fromarray(img[0]).save(data / "images" / "a.png")
    Image.fromarray(np.array([[0, 0, 255], [255, 255, 0], [255, 0, 0]], np.uint8)[ids]).save(
        data / "masks" / "a.png"
    )
    cfg = write_config(tmp_path / "c.yaml", data, val=[], train=[str(data)])
    r = run_cli(
        "finetune", "--model", str(ckpt), "--config", str(cfg), "--out", str(tmp_path / "o")
    )
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "the training data has 1 band(s) but the model expects 3" in r.stderr
    assert not (tmp_path / "o" / "best").exists()


def test_parse_methods_canonical_order():
    assert ad.parse_methods("adabn,stats") == ("stats", "adabn")
    with pytest.raises(ConfigError, match="combine hist, stats, adabn, tent, self-training"):
        ad.parse_methods("stats,magic")


def test_pseudo_labels_are_class_balanced():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=(1, 20, 20)).transpose(0, 3, 1, 2)
    probs[0, :, :, :2] = np.array([0.3, 0.35, 0.35])[:, None, None]  # unsure pixels
    labels = ad.pseudo_labels(probs, np.ones((1, 20, 20), bool), 0.5, 0.99)
    pred = probs.argmax(1)
    for k in range(3):
        n_pred = (pred == k).sum()
        n_lab = (labels == k).sum()
        assert 0.4 * n_pred <= n_lab <= 0.6 * n_pred + 1
    assert (labels[(labels != 255)] == pred[labels != 255]).all()


def test_adapt_stats_and_adabn(source_model, target_rasters, tmp_path):
    ckpt, _ = source_model
    out = tmp_path / "a"
    r = CliRunner().invoke(
        cli.cli,
        [
            "adapt",
            *target_rasters,
            "--model",
            str(ckpt),
            "--out",
            str(out),
            "--method",
            "adabn,stats",
            "--windows",
            "6",
            "--tile",
            "32",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    _, meta = load_checkpoint(out)
    _, src = load_checkpoint(ckpt)
    assert meta.extra["adapted"] == ["stats", "adabn"]
    t = ad.sample_windows(target_rasters, 32, 6, 0)
    mean, std = ad.target_stats(t, 255.0)
    np.testing.assert_allclose(meta.mean, mean, rtol=1e-6)
    assert meta.mean != src.mean
    old, new = _w(ckpt), _w(out)
    rm = [k for k in old if k.endswith("running_mean")]
    assert rm and all(not np.array_equal(old[k], new[k]) for k in rm)
    conv = [k for k in old if k.endswith("conv1.weight")]
    assert all(np.array_equal(old[k], new[k]) for k in conv)  # adabn touches BN stats only


@pytest.mark.parametrize("consistency", [True, False])
def test_adapt_tent_lowers_entropy_and_self_training_runs(
    source_model, target_rasters, consistency
):
    import torch

    ckpt, _ = source_model
    model, meta = load_checkpoint(ckpt)
    t = ad.sample_windows(target_rasters, 32, 8, 0)
    x = ad._inputs(t, meta)
    with torch.no_grad():
        before = float(ad.entropy(model.eval()(x)))
    cfg = ad.AdaptConfig(
        ("tent",), tent_steps=15, tent_lr=1e-2, batch_size=8, consistency=consistency
    )
    ad.adapt(model, meta, t, cfg)
    with torch.no_grad():
        model.train()  # tent's objective is on batch statistics
        after = float(ad.entropy(model(x)))
    assert after < before
    model2, meta2 = load_checkpoint(ckpt)
    w0 = {k: v.clone() for k, v in model2.state_dict().items()}
    cfg = ad.AdaptConfig(
        ("self-training",),
        rounds=2,
        steps=2,
        batch_size=4,
        consistency=consistency,
        curriculum=consistency,
    )
    new_meta = ad.adapt(model2, meta2, t, cfg)
    assert new_meta.extra["adapted"] == ["self-training"]
    assert any(not torch.equal(w0[k], v) for k, v in model2.state_dict().items())


def test_curriculum_grows_the_pseudo_labelled_fraction():
    cfg = ad.AdaptConfig(("self-training",), rounds=3, fraction=0.6, curriculum=True)
    assert [round(ad.round_fraction(cfg, r), 6) for r in range(3)] == [0.2, 0.4, 0.6]
    flat = ad.AdaptConfig(("self-training",), rounds=3, fraction=0.6)  # the default: off
    assert [ad.round_fraction(flat, r) for r in range(3)] == [0.6] * 3


def test_views_flip_labels_with_images_and_zero_nodata(source_model):
    ckpt, _ = source_model
    _, meta = load_checkpoint(ckpt)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (6, 3, 16, 16)).astype(np.float32)
    valid = np.ones((6, 16, 16), bool)
    valid[:, :, :3] = False  # nodata on the left edge
    t = ad.TargetWindows(data, valid)
    labels = np.broadcast_to(np.arange(16), (6, 16, 16)).astype(np.int64)  # label = column
    plain = ad._inputs(t, meta).numpy()
    x, y = ad.views(t, range(6), labels, meta, ad.MIRROR, np.random.default_rng(1))
    x, y = x.numpy(), y.numpy()
    flipped = y[:, 0, 0] == 15
    assert flipped.any() and not flipped.all()  # each window is mirrored or not, at random
    for i in range(6):
        want = plain[i][..., ::-1] if flipped[i] else plain[i]
        np.testing.assert_allclose(x[i], want, rtol=1e-6)  # the image moved with its labels
    xs, ys = ad.views(t, range(6), labels, meta, ad.STRONG, np.random.default_rng(1))
    xs, ys = xs.numpy(), ys.numpy()
    assert not np.allclose(xs, x)  # a strong view changes the look
    for i in range(6):  # nodata stays zero, mirrored with the image
        cols = slice(13, 16) if ys[i, 0, 0] == 15 else slice(0, 3)
        assert (xs[i][..., cols] == 0).all() and (xs[i][..., 3:13] != 0).all()


def test_teacher_is_mirror_symmetric(source_model, target_rasters):
    import torch

    ckpt, _ = source_model
    model, meta = load_checkpoint(ckpt)
    x = ad._inputs(ad.sample_windows(target_rasters, 32, 4, 0), meta)
    p = ad.mirrored_probabilities(model, x, 2)
    q = ad.mirrored_probabilities(model, x.flip(-1), 2)
    np.testing.assert_allclose(q, p[..., ::-1], atol=1e-5)
    assert np.allclose(p.sum(1), 1, atol=1e-5)
    with torch.no_grad():
        one = model.eval()(x).softmax(1).numpy()
    assert not np.allclose(p, one, atol=1e-4)  # the mirror image contributes


def test_adapt_bad_inputs(source_model, tmp_path):
    ckpt, _ = source_model
    gray = write_geotiff(tmp_path / "g.tif", np.zeros((1, 40, 40), np.uint8))
    r = run_cli("adapt", str(gray), "--model", str(ckpt), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Missing option '--method'" in r.stderr  # no default method
    assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "o").exists()
    r = run_cli("adapt", str(gray), "--model", str(ckpt), "--out", str(tmp_path / "o"),
                "--method", "adabn")  # fmt: skip
    assert r.returncode == 1 and "has 1 band(s) but the model expects 3" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "o").exists()
    r = run_cli(
        "adapt", str(gray), "--model", str(ckpt), "--out", str(tmp_path / "o"), "--method", "bogus"
    )
    assert r.returncode == 2 and "combine hist, stats, adabn" in r.stderr


def test_adapt_shows_its_steps_and_restores_torch_threads(source_model, target_rasters, tmp_path):
    import torch

    ckpt, _ = source_model
    rasters = [str(p) for p in target_rasters]
    small = ["--windows", "4", "--tile", "32"]
    r = run_cli("adapt", *rasters, "--model", str(ckpt), "--out", str(tmp_path / "a"),
                "--method", "tent", "--tent-steps", "3", *small)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "adapt: tent" in r.stderr and "3/3" in r.stderr  # a progress bar of the steps
    st = ["--method", "self-training", "--rounds", "1", "--steps", "1", "--no-consistency",
          "--curriculum", *small]  # fmt: skip
    r = run_cli("adapt", *rasters, "--model", str(ckpt), "--out", str(tmp_path / "st"), *st)
    assert r.returncode == 0, r.stderr
    options = load_checkpoint(tmp_path / "st")[1].extra["adapt_options"]
    assert options["curriculum"] and not options["consistency"] and options["windows"] == 4
    before = torch.get_num_threads()
    res = CliRunner().invoke(cli.cli, ["adapt", *rasters, "--model", str(ckpt), "--out",
                                       str(tmp_path / "b"), "--method", "adabn", "--windows", "2",
                                       "--tile", "32", "--threads", "1", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert torch.get_num_threads() == before


def test_hist_undoes_a_change_of_look(source_model, tmp_path):
    """A target that is a training image through another gamma and gain maps back onto it."""
    from geoseg.core.histogram import band_quantiles
    from geoseg.model.checkpoint import save_checkpoint
    from geoseg.model.engine import normalize

    ckpt, _ = source_model
    model, meta = load_checkpoint(ckpt)
    assert meta.quantiles is not None and len(meta.quantiles) == 3  # written by train
    img, _ = scene(64, 64, 0)
    ref = tmp_path / "ref"  # the reference distribution: this one image's
    save_checkpoint(model, meta.replace(quantiles=band_quantiles([img / 255.0])), ref)
    looks = np.clip(255 * (img / 255.0) ** 0.6 * 0.8 + 20, 0, 255).astype(np.uint8)
    target = write_geotiff(tmp_path / "target.tif", looks)
    out = tmp_path / "hist"
    args = ["--method", "hist", "--windows", "1", "--tile", "64", "--no-progress"]
    proc = run_cli("adapt", str(target), "--model", str(ref), "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    assert "mean confidence" in proc.stdout and "->" in proc.stdout
    _, adapted = load_checkpoint(out)
    assert adapted.extra["adapted"] == ["hist"] and len(adapted.extra["confidence"]) == 2
    assert all(np.array_equal(v, _w(ref)[k]) for k, v in _w(out).items())  # weights kept
    _, ref_meta = load_checkpoint(ref)
    want = normalize(img, ref_meta)
    before = np.abs(normalize(looks, ref_meta) - want).mean()
    after = np.abs(normalize(looks, adapted) - want).mean()
    assert after < before / 5, (before, after)


def test_hist_needs_histograms_and_refuses_bad_ones(source_model, target_rasters, tmp_path):
    import json

    from geoseg.model.checkpoint import save_checkpoint

    ckpt, _ = source_model
    model, meta = load_checkpoint(ckpt)
    old = tmp_path / "old"
    save_checkpoint(model, meta.replace(quantiles=None), old)
    args = [*target_rasters, "--model", str(old), "--method", "hist", "--windows", "4",
            "--tile", "32", "--no-progress"]  # fmt: skip
    proc = run_cli("adapt", *args, "--out", str(tmp_path / "a"))
    assert proc.returncode == 1 and "no training histograms" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    good = tmp_path / "h.json"
    good.write_text(json.dumps({"quantiles": meta.quantiles}))
    proc = run_cli("adapt", *args, "--out", str(tmp_path / "b"), "--histograms", str(good))
    assert proc.returncode == 0, proc.stderr
    for name, doc, words in [
        ("two_bands.json", {"quantiles": meta.quantiles[:2]}, "2 bands"),
        ("decreasing.json", {"quantiles": [q[::-1] for q in meta.quantiles]}, "decrease"),
        ("short.json", {"quantiles": [q[:5] for q in meta.quantiles]}, "65 finite"),
        ("list.json", [1, 2], "not JSON with 'quantiles'"),
    ]:
        bad = tmp_path / name
        bad.write_text(json.dumps(doc))
        proc = run_cli("adapt", *args, "--out", str(tmp_path / "c"), "--histograms", str(bad))
        assert proc.returncode == 1 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
    both = [*target_rasters, "--model", str(ckpt), "--method", "hist,stats"]
    proc = run_cli("adapt", *both, "--out", str(tmp_path / "d"))
    assert proc.returncode == 2 and "choose one" in proc.stderr


def test_adapt_refuses_all_nodata_windows(source_model, tmp_path):
    ckpt, _ = source_model
    empty = write_geotiff(tmp_path / "nodata.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    proc = run_cli("adapt", str(empty), "--model", str(ckpt), "--out", str(tmp_path / "a"),
                   "--windows", "4", "--tile", "32", "--method", "adabn")  # fmt: skip
    assert proc.returncode == 1 and "valid pixel" in proc.stderr, proc.stderr
    assert not (tmp_path / "a").exists()


def test_distribution_matching_warns_on_a_shifted_target(source_model, target_rasters, tmp_path):
    ckpt, _ = source_model
    proc = run_cli("adapt", *target_rasters, "--model", str(ckpt), "--out", str(tmp_path / "s"),
                   "--method", "stats", "--windows", "4", "--tile", "32")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if "training std" in ln]
    assert len(warning) == 1 and "self-training" in warning[0]
    _, meta = load_checkpoint(ckpt)
    same = ad.TargetWindows(np.zeros((1, 3, 4, 4), np.float32), np.ones((1, 4, 4), bool))
    same.data[:] = (np.asarray(meta.mean) * meta.scale)[None, :, None, None]
    assert ad.warn_if_shifted(same, meta, "stats") < 1e-5
