"""`geoseg evaluate` end to end: raster pairs, datasets, outputs and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from conftest import write_geotiff
from PIL import Image

from geoseg.core.metrics import confusion_matrix
from geoseg.run.scoring import PairSpec, evaluate_pair


def geoseg(*args):
    return subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (300, 250)).astype(np.uint8)
    label[:10] = 255  # ignore
    pred = np.where(rng.random(label.shape) < 0.7, label, rng.integers(0, 4, label.shape))
    pred = np.where(label == 255, 0, pred).astype(np.uint8)
    pred[-5:, :] = 255  # nodata in the prediction
    p = write_geotiff(tmp_path / "pred.tif", pred, nodata=255)
    lab = write_geotiff(tmp_path / "label.tif", label)
    return p, lab, pred, label


def test_block_size_and_workers_do_not_change_the_matrix(pair):
    p, lab, pred, label = pair
    keep = pred != 255
    ref = confusion_matrix(pred, label, 4, 255, valid=keep)
    for block in (64, 100, 4096):
        cm, _ = evaluate_pair(PairSpec(str(p), str(lab), 4), block_size=block)
        assert np.array_equal(cm, ref)
    cm2, _ = evaluate_pair(PairSpec(str(p), str(lab), 4), block_size=64, workers=2)
    assert np.array_equal(cm2, ref)


def test_cli_pair_outputs_and_error_map(pair, tmp_path):
    p, lab, pred, label = pair
    out = tmp_path / "r"
    proc = geoseg(
        "evaluate",
        p,
        lab,
        "--num-classes",
        "4",
        "--json",
        f"{out}.json",
        "--csv",
        f"{out}.csv",
        "--plot",
        f"{out}.png",
        "--error-map",
        f"{out}_err.tif",
        "--block-size",
        "128",
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("mIoU (macro)")
    doc = json.loads((tmp_path / "r.json").read_text())
    keep = pred != 255
    cm = confusion_matrix(pred, label, 4, 255, valid=keep)
    assert doc["confusion_matrix"] == cm.tolist()
    assert "conventions" in doc and doc["summary"]["pixels"] == int(cm.sum())
    assert "iou" in (tmp_path / "r.csv").read_text().splitlines()[0]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    with rasterio.open(tmp_path / "r_err.tif") as err, rasterio.open(p) as src:
        e = err.read(1)
        assert err.crs == src.crs and err.transform == src.transform
    assert (e[:10] == 2).all()  # ignored label rows
    wrong = (pred != label) & keep & (label != 255)
    assert np.array_equal(e == 1, wrong)


def test_grid_mismatch_needs_align(tmp_path, pair):
    p, lab, pred, label = pair
    from rasterio.transform import from_origin

    shifted = write_geotiff(
        tmp_path / "shifted.tif", label, transform=from_origin(500000.0 - 50, 4200000.0, 10.0, 10.0)
    )
    proc = geoseg("evaluate", p, shifted, "--num-classes", "4")
    assert proc.returncode != 0 and "--align" in proc.stderr and "Traceback" not in proc.stderr
    assert "transform" in proc.stderr
    proc = geoseg("evaluate", p, shifted, "--num-classes", "4", "--align")
    assert proc.returncode == 0, proc.stderr
    assert "resampled" in proc.stderr


def test_bad_inputs(tmp_path, pair, shared_data):
    p, lab, pred, label = pair
    bad_label = write_geotiff(tmp_path / "bad.tif", np.full((300, 250), 9, np.uint8))
    proc = geoseg("evaluate", p, bad_label, "--num-classes", "4")
    assert proc.returncode != 0 and "9 (" in proc.stderr and "Traceback" not in proc.stderr
    proc = geoseg("evaluate", "--dataset", f"nosuch:{tmp_path}", "--pred-dir", tmp_path)
    assert proc.returncode != 0 and "ade20k" in proc.stderr
    proc = geoseg("evaluate", p, tmp_path / "missing.tif", "--num-classes", "4")
    assert proc.returncode != 0 and "missing.tif" in proc.stderr
    # folder datasets: empty, image without mask, unknown colour
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()

    def evaluate_folder(pred_dir=tmp_path):
        args = ("--dataset", f"folder:{root}", "--config", "configs/dubai.yaml")
        return geoseg("evaluate", *args, "--pred-dir", pred_dir)

    proc = evaluate_folder()
    assert proc.returncode != 0 and "no image" in proc.stderr
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.png")
    proc = evaluate_folder()
    assert (
        proc.returncode != 0 and "without an annotation" in proc.stderr and "a.png" in proc.stderr
    )
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(root / "masks" / "a.png")
    pd = tmp_path / "pd"
    pd.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pd / "a.png")
    proc = evaluate_folder(pd)
    assert proc.returncode != 0 and "#070707" in proc.stderr and "palette" in proc.stderr


def test_model_on_dubai_parts(shared_data, tmp_path):
    from pathlib import Path

    model = Path(__file__).resolve().parents[1] / "models" / "dubai-demo"
    if not model.is_dir():
        pytest.skip("bundled demo model absent")
    proc = geoseg(
        "evaluate",
        "--dataset",
        f"folder:{shared_data}/dubai-aerial/Tile 7",
        "--config",
        "configs/dubai.yaml",
        "--model",
        model,
        "--json",
        tmp_path / "m.json",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["summary"]["pixels"] > 1_000_000 and 0 < doc["summary"]["miou"] <= 1


def test_model_on_a_list_of_raster_pairs(tmp_path, make_raster):
    from helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.geoseg")
    lines = []
    for i in range(2):
        img = make_raster(height=70, width=90, name=f"s{i}_image.tif", seed=i)
        lab = write_geotiff(
            tmp_path / f"s{i}_label.tif",
            np.random.default_rng(i).integers(0, 4, (70, 90)).astype(np.uint8),
        )
        lines.append(f"{img.name} {lab.name}")
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("num_classes: 4\n")
    proc = geoseg(
        "evaluate",
        "--dataset",
        f"rasters:{tmp_path / 'pairs.txt'}",
        "--config",
        cfg,
        "--model",
        ckpt,
        "--tile",
        "64",
        "--json",
        tmp_path / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["pixels"] == 2 * 70 * 90
    glob_proc = geoseg(
        "evaluate",
        "--dataset",
        f"rasters:{tmp_path}/*_image.tif",
        "--config",
        cfg,
        "--model",
        ckpt,
        "--tile",
        "64",
    )
    assert glob_proc.returncode == 0, glob_proc.stderr
    cfg.write_text("num_classes: 5\n")
    bad = geoseg(
        "evaluate",
        "--dataset",
        f"rasters:{tmp_path / 'pairs.txt'}",
        "--config",
        cfg,
        "--model",
        ckpt,
    )
    assert bad.returncode != 0 and "4 classes" in bad.stderr and "has 5" in bad.stderr


def test_pred_dir_finds_predict_batch_outputs(tmp_path):
    """`predict --output-dir` writes {stem}_classes.tif plus an .aux.xml: both are understood."""
    from geoseg.run.scoring import find_prediction

    (tmp_path / "a_classes.tif").write_bytes(b"x")
    (tmp_path / "a_classes.tif.aux.xml").write_text("<PAMDataset/>")
    assert find_prediction(tmp_path, "sub/a") == tmp_path / "a_classes.tif"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "c_0.tif").write_bytes(b"x")
    (tmp_path / "b" / "c_0.tif.aux.xml").write_text("<PAMDataset/>")
    assert find_prediction(tmp_path, "c_0") == tmp_path / "b" / "c_0.tif"


def test_dataset_filters_and_tta(tmp_path, make_raster):
    from helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.geoseg")
    lines = []
    for i in range(3):
        img = make_raster(height=40, width=50, name=f"s{i}_image.tif", seed=i)
        lab = write_geotiff(
            tmp_path / f"s{i}_label.tif",
            np.random.default_rng(i).integers(0, 4, (40, 50)).astype(np.uint8),
        )
        lines.append(f"{img.name} {lab.name}")
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("num_classes: 4\n")
    base = ["evaluate", "--dataset", f"rasters:{tmp_path / 'pairs.txt'}", "--config", cfg,
            "--model", ckpt, "--tile", "32", "--no-progress"]  # fmt: skip

    def pixels(*extra, name="r.json"):
        proc = geoseg(*base, *extra, "--json", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
        return json.loads((tmp_path / name).read_text())["summary"]["pixels"]

    assert pixels() == 3 * 40 * 50
    assert pixels("--include", "s1*", "--include", "s2*", name="i.json") == 2 * 40 * 50
    assert pixels("--exclude", "s0*", "--exclude", "s1*", name="e.json") == 40 * 50
    plain = json.loads((tmp_path / "r.json").read_text())["confusion_matrix"]
    pixels("--tta", "d4", name="t.json")
    tta = json.loads((tmp_path / "t.json").read_text())
    assert tta["confusion_matrix"] != plain  # d4 averages 8 views of an untrained model
    none = geoseg(*base, "--include", "nothing*")
    assert none.returncode != 0 and "nothing*" in none.stderr and len(
        [ln for ln in none.stderr.splitlines() if ln.strip()]
    ) == 1


def test_evaluate_with_a_model_equals_predict_then_evaluate(tmp_path):
    """--model runs predict's own path: the same confusion matrix as predict + --pred-dir."""
    from helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.geoseg", classes=5, tile=64)
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    colours = ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"]
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours], np.uint8)
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.integers(0, 255, (90, 110, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"p{i}.jpg", quality=80)
        Image.fromarray(rgb[rng.integers(0, 5, (90, 110))]).save(root / "masks" / f"p{i}.png")
    preds = tmp_path / "preds"
    jpgs = sorted((root / "images").glob("*.jpg"))
    proc = geoseg("predict", *jpgs, "--output-dir", preds, "--name", "{stem}.tif",
                  "--model", ckpt, "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    common = ["evaluate", "--dataset", f"folder:{root}", "--config", "configs/dubai.yaml"]
    a = geoseg(*common, "--pred-dir", preds, "--json", tmp_path / "a.json", "--no-progress")
    b = geoseg(*common, "--model", ckpt, "--json", tmp_path / "b.json", "--no-progress")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    cm_a = json.loads((tmp_path / "a.json").read_text())["confusion_matrix"]
    cm_b = json.loads((tmp_path / "b.json").read_text())["confusion_matrix"]
    assert cm_a == cm_b and sum(map(sum, cm_a)) == 3 * 90 * 110


def test_json_file_or_dash_means_the_same_in_every_command(tmp_path, pair):
    p, lab, _, _ = pair
    dash = geoseg("evaluate", p, lab, "--num-classes", "4", "--json", "-")
    assert dash.returncode == 0, dash.stderr
    assert json.loads(dash.stdout)["summary"]["pixels"] > 0  # JSON alone, no table
    both = geoseg("evaluate", p, lab, "--num-classes", "4", "--json", "-", "--csv", "-")
    assert both.returncode == 2 and "stdout" in both.stderr
    from helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.geoseg")
    info = geoseg("model", "info", ckpt, "--json", tmp_path / "meta.json")
    assert info.returncode == 0 and "architecture" in info.stdout  # the table, and the file
    assert json.loads((tmp_path / "meta.json").read_text())["classes"] == 4
    again = geoseg("model", "info", ckpt, "--json", tmp_path / "meta.json")
    assert again.returncode != 0 and "--overwrite" in again.stderr
    assert json.loads(geoseg("model", "info", ckpt, "--json", "-").stdout)["classes"] == 4


def test_an_in_memory_image_is_sent_to_the_workers_once(tmp_path, recwarn):
    """evaluate --model scatters each image once; binding it into every task made Dask warn
    about large graphs and pickle the image per task."""
    from helpers import make_checkpoint

    from geoseg.config import PredictConfig
    from geoseg.run.arrays import ImagePredictor

    ckpt = make_checkpoint(tmp_path / "m.geoseg", tile=256)
    image = np.random.default_rng(0).integers(0, 255, (3, 2048, 2048), dtype=np.uint8)
    with ImagePredictor(str(ckpt), PredictConfig(device="cpu")) as predictor:
        classes = predictor(image)
    assert classes.shape == (2048, 2048) and (classes != 255).all()
    assert not [w for w in recwarn if "large graph" in str(w.message).lower()]
