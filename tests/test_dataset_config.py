"""One dataset config and one folder reader for train, finetune and evaluate.

The same YAML keys (classes, label_mode, ignore colours/ids, folder names) drive every command;
folder samples are named and paired the same way in training and evaluation; raster-pair
evaluation decodes RGB masks through the config's palette.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import write_geotiff
from hostile import assert_refused, run_cli, snapshot
from PIL import Image
from train_helpers import IGNORE, PALETTE, TINY_MODEL, write_config, write_folder

from geoseg.core.metrics import confusion_matrix
from geoseg.data import DatasetConfig, dataset_config, open_dataset
from geoseg.errors import ConfigError, DatasetError
from geoseg.train.config import build_train_config
from geoseg.train.sources import load_samples


def dataset_yaml(path, **over):
    cfg = {
        "label_mode": "rgb",
        "classes": [{"name": n, "colour": list(c)} for n, c in PALETTE.items()],
        "ignore_colours": ["#000000"],
        **over,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_and_evaluation_read_the_same_samples(tmp_path):
    data = write_folder(tmp_path / "region", n=3)
    cfg = build_train_config(
        {**yaml.safe_load(dataset_yaml(tmp_path / "ds.yaml").read_text()), **TINY_MODEL},
        {"train": [{"kind": "folder", "path": str(data), "include": ["*/part_00[01]"]}]},
    )
    trained = load_samples(cfg.train, cfg)
    evaluated = list(open_dataset(f"folder:{data}", tmp_path / "ds.yaml", None, ["*/part_00[01]"]))
    assert [s.name for s in trained] == [s.name for s in evaluated] == [
        "region/part_000",
        "region/part_001",
    ]
    for a, b in zip(trained, evaluated, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert (trained[0].mask[:4, :4] == 255).all()  # the ignore colour, in both


def test_an_unpaired_image_is_refused_alike_unless_filtered_out(tmp_path):
    data = write_folder(tmp_path / "region", n=2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / "images" / "extra.png")
    cfg_path = dataset_yaml(tmp_path / "ds.yaml")
    with pytest.raises(DatasetError, match="extra.png"):
        open_dataset(f"folder:{data}", cfg_path)
    cfg = build_train_config(
        {**yaml.safe_load(cfg_path.read_text()), **TINY_MODEL},
        {"train": [{"kind": "folder", "path": str(data)}]},
    )
    with pytest.raises(DatasetError, match="extra.png"):
        load_samples(cfg.train, cfg)
    kept = open_dataset(f"folder:{data}", cfg_path, None, (), ["*/extra"])
    assert len(kept) == 2
    cfg = build_train_config(
        cfg.to_dict(), {"train": [{"kind": "folder", "path": str(data), "exclude": ["*/extra"]}]}
    )
    assert len(load_samples(cfg.train, cfg)) == 2


def test_training_config_is_flat_and_round_trips(tmp_path):
    base = {**yaml.safe_load(dataset_yaml(tmp_path / "ds.yaml").read_text()), **TINY_MODEL}
    cfg = build_train_config(base, {"train": "folder:x"})
    d = cfg.to_dict()
    assert d["label_mode"] == "rgb" and d["classes"][0]["name"] == "Sea" and "dataset" not in d
    again = build_train_config(d)
    assert again == cfg and again.fingerprint() == cfg.fingerprint()
    assert isinstance(cfg.dataset, DatasetConfig) and cfg.dataset.names == tuple(PALETTE)


def test_num_classes_is_folded_into_classes():
    cfg = DatasetConfig.from_mapping({"label_mode": "ids", "num_classes": 3})
    assert cfg.names == ("class_0", "class_1", "class_2") and cfg.num_classes is None
    with pytest.raises(ConfigError, match="disagrees"):
        DatasetConfig.from_mapping({"num_classes": 2, "classes": ["a", "b", "c"]})


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"label_mode": "hsv"}, ["label_mode", "'rgb'"]),
        ({"ignore_ids": ["x"]}, ["ignore_ids", "list of int"]),
        ({"images": "../up"}, ["images", "sub-folder"]),
        ({"classes": [{"name": "a"}]}, ["classes[0]", "colour"]),
        ({"ignore_colors": []}, ["unknown dataset option", "ignore_colors"]),
    ],
)
def test_bad_dataset_options_are_one_line(bad, words):
    with pytest.raises(ConfigError) as info:
        DatasetConfig.from_mapping({"classes": ["a", "b"], "label_mode": "ids", **bad})
    for w in words:
        assert w in str(info.value)


def test_evaluate_takes_a_training_config_as_its_dataset_config(tmp_path):
    """The training recipe names its dataset; evaluate reads its dataset keys and skips the rest."""
    data = write_folder(tmp_path / "region", n=2)
    train_cfg = write_config(tmp_path / "train.yaml", data)
    assert dataset_config(train_cfg, other_keys=build_train_config().to_dict()).names == tuple(
        PALETTE
    )
    with pytest.raises(ConfigError, match="unknown dataset option"):
        dataset_config(train_cfg)


def _rgb_pair(tmp_path, colours, ignore_every=7):
    rng = np.random.default_rng(3)
    truth = rng.integers(0, len(colours), (70, 90))
    rgb = np.asarray(colours, np.uint8)[truth]
    ignored = (np.arange(truth.size).reshape(truth.shape) % ignore_every) == 0
    rgb[ignored] = IGNORE
    Image.fromarray(rgb).save(tmp_path / "mask.png")
    pred = np.where(rng.random(truth.shape) < 0.8, truth, rng.integers(0, 3, truth.shape))
    write_geotiff(tmp_path / "pred.tif", pred.astype(np.uint8)[None], nodata=255, crs=None)
    return truth, ignored, pred


def test_raster_pair_decodes_an_rgb_mask_through_the_config_palette(tmp_path):
    truth, ignored, pred = _rgb_pair(tmp_path, list(PALETTE.values()))
    cfg = dataset_yaml(tmp_path / "ds.yaml")
    res = run_cli(
        "evaluate", tmp_path / "pred.tif", tmp_path / "mask.png", "--config", cfg,
        "--json", tmp_path / "m.json", "--block-size", "32", "--no-progress",
    )  # fmt: skip
    assert res.code == 0, res.err
    got = json.loads((tmp_path / "m.json").read_text())
    expected = confusion_matrix(pred[~ignored], truth[~ignored], 3, 255)
    assert got["confusion_matrix"] == expected.tolist()
    assert [c["name"] for c in got["classes"]] == list(PALETTE)


def test_raster_pair_with_ids_and_ignore_ids(tmp_path):
    rng = np.random.default_rng(4)
    label = rng.integers(0, 4, (40, 50)).astype(np.uint8)  # 3 = unlabelled
    pred = rng.integers(0, 3, label.shape).astype(np.uint8)
    write_geotiff(tmp_path / "label.tif", label[None])
    write_geotiff(tmp_path / "pred.tif", pred[None], nodata=255)
    cfg = dataset_yaml(tmp_path / "ds.yaml", label_mode="ids", ignore_colours=[], ignore_ids=[3])
    res = run_cli(
        "evaluate", tmp_path / "pred.tif", tmp_path / "label.tif", "--config", cfg,
        "--json", tmp_path / "m.json", "--no-progress",
    )  # fmt: skip
    assert res.code == 0, res.err
    keep = label != 3
    expected = confusion_matrix(pred[keep], label[keep], 3, 255)
    assert json.loads((tmp_path / "m.json").read_text())["confusion_matrix"] == expected.tolist()


def test_raster_pair_with_a_colour_outside_the_palette_is_one_line(tmp_path):
    _rgb_pair(tmp_path, [*PALETTE.values(), (9, 9, 9)])
    cfg = dataset_yaml(tmp_path / "ds.yaml")
    before = snapshot(tmp_path)
    res = run_cli("evaluate", tmp_path / "pred.tif", tmp_path / "mask.png", "--config", cfg)
    assert_refused(res, before, snapshot(tmp_path), "#090909", "palette")


def test_raster_pair_with_a_single_band_label_in_rgb_mode_is_one_line(tmp_path):
    write_geotiff(tmp_path / "label.tif", np.zeros((1, 8, 8), np.uint8))
    write_geotiff(tmp_path / "pred.tif", np.zeros((1, 8, 8), np.uint8), nodata=255)
    cfg = dataset_yaml(tmp_path / "ds.yaml")
    before = snapshot(tmp_path)
    res = run_cli("evaluate", tmp_path / "pred.tif", tmp_path / "label.tif", "--config", cfg)
    assert_refused(res, before, snapshot(tmp_path), "label_mode", "ids")


@pytest.mark.parametrize(
    "pattern, selected",
    [
        ("part_00[01]", ["region/part_000", "region/part_001"]),  # no '/': the last part
        ("*/part_002", ["region/part_002"]),  # with '/': the whole name
        ("region/*", ["region/part_000", "region/part_001", "region/part_002"]),
        ("other/*", []),
        ("region", []),  # the root alone names no sample
    ],
)
def test_include_patterns_mean_the_same_everywhere(tmp_path, pattern, selected):
    data = write_folder(tmp_path / "region", n=3)
    cfg_path = dataset_yaml(tmp_path / "ds.yaml")
    if not selected:
        with pytest.raises(DatasetError, match="no image/mask pairs match"):
            open_dataset(f"folder:{data}", cfg_path, None, [pattern])
        return
    assert [s.name for s in open_dataset(f"folder:{data}", cfg_path, None, [pattern])] == selected
    cfg = build_train_config(
        {**yaml.safe_load(cfg_path.read_text()), **TINY_MODEL},
        {"train": [{"kind": "folder", "path": str(data), "include": [pattern]}]},
    )
    assert [s.name for s in load_samples(cfg.train, cfg)] == selected
