"""Training data sources (raster pairs, vector labels) and bad inputs: one-line errors, exit 1,
no half-written checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REPO, write_geotiff  # noqa: E402
from train_helpers import PALETTE, TINY_MODEL, run_cli, scene, write_config, write_folder  # noqa: E402

import cli  # noqa: E402
from geoseg.train.config import SourceSpec, build_train_config  # noqa: E402
from geoseg.train.sources import load_raster_pair, load_vector  # noqa: E402


def main(capsys, *args: str) -> tuple[int, str]:
    """Run ``cli.main`` in-process; return (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(list(args))
    return exc.value.code, capsys.readouterr().err


def one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def no_checkpoint(run: Path) -> None:
    assert not (run / "best").exists() and not (run / "last").exists()


def _cfg(**kw):
    base = {"classes": list(PALETTE), "ignore_index": 255, **TINY_MODEL}
    return build_train_config(base, kw)


# ----------------------------------------------------------------------------- raster pairs
def _pair(tmp_path, shift=0.0, label_crs="EPSG:32618"):
    from rasterio.transform import from_origin

    img, ids = scene(40, 48, 0)
    image = write_geotiff(tmp_path / "img.tif", img)
    labels = ids.astype(np.uint8)
    labels[0, 0] = 200  # label nodata -> ignore
    t = from_origin(500000.0 + shift, 4200000.0, 10.0, 10.0)
    lab = write_geotiff(tmp_path / "lab.tif", labels[None], nodata=200, crs=label_crs, transform=t)
    return image, lab, ids


def test_raster_pair_on_same_grid(tmp_path):
    image, lab, ids = _pair(tmp_path)
    cfg = _cfg()
    spec = SourceSpec.from_any({"kind": "raster", "path": str(image), "labels": str(lab)})
    (s,) = load_raster_pair(spec, cfg)
    assert s.image.shape == (3, 40, 48) and s.mask[0, 0] == 255
    assert (s.mask[1:, 1:] == ids[1:, 1:]).all()


def test_raster_pair_misaligned_needs_align(tmp_path):
    from geoseg.errors import AlignmentError

    image, lab, ids = _pair(tmp_path, shift=20.0)  # labels 2 pixels to the east
    spec = SourceSpec.from_any({"kind": "raster", "path": str(image), "labels": str(lab)})
    with pytest.raises(AlignmentError, match="pass --align"):
        load_raster_pair(spec, _cfg())
    (s,) = load_raster_pair(spec, _cfg(align=True))
    assert (s.mask[:, :2] == 255).all()  # no label data west of the label raster
    assert (s.mask[1:, 3:] == ids[1:, 1:-2]).all()


def test_vector_labels_rasterized(tmp_path):
    img, _ = scene(40, 48, 0)
    image = write_geotiff(tmp_path / "img.tif", img)
    x0, y0 = 500000.0, 4200000.0  # pixel (r, c) centre = (x0 + 10c + 5, y0 - 10r - 5)
    square = [[x0, y0], [x0 + 100, y0], [x0 + 100, y0 - 100], [x0, y0 - 100], [x0, y0]]
    right = [
        [x0 + 200, y0],
        [x0 + 480, y0],
        [x0 + 480, y0 - 400],
        [x0 + 200, y0 - 400],
        [x0 + 200, y0],
    ]
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:32618"}},
        "features": [
            {
                "type": "Feature",
                "properties": {"landuse": "Town"},
                "geometry": {"type": "Polygon", "coordinates": [square]},
            },
            {
                "type": "Feature",
                "properties": {"landuse": 0},
                "geometry": {"type": "Polygon", "coordinates": [right]},
            },
        ],
    }
    gj = tmp_path / "labels.geojson"
    gj.write_text(json.dumps(doc))
    spec = SourceSpec.from_any(
        {"kind": "vector", "path": str(image), "labels": str(gj), "class_attr": "landuse"}
    )
    (s,) = load_vector(spec, _cfg())
    assert (s.mask[:10, :10] == 2).all() and (s.mask[:, 20:] == 0).all()
    assert (s.mask[:, 10:20] == 255).all() and (s.mask[10:, :10] == 255).all()


# ----------------------------------------------------------------------------- bad inputs
@pytest.fixture
def tiny(tmp_path):
    data = write_folder(tmp_path / "data", n=4)
    return data, write_config(tmp_path / "train.yaml", data, epochs=1)


def test_unknown_colour_is_one_line_error(tiny, tmp_path, capsys):
    from PIL import Image

    data, cfg = tiny
    m = np.asarray(Image.open(data / "masks" / "part_001.png")).copy()
    m[5, 5] = (12, 34, 56)
    Image.fromarray(m).save(data / "masks" / "part_001.png")
    code, err = main(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 1
    one_line_error(err, "#0C2238", "part_001.png", "ignore_colours")
    no_checkpoint(tmp_path / "r")


def test_label_ids_outside_class_set(tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "ids"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    img, ids = scene(32, 32, 0)
    ids[3, 3] = 9
    Image.fromarray(np.moveaxis(img, 0, -1)).save(data / "images" / "a.png")
    Image.fromarray(ids.astype(np.uint8)).save(data / "masks" / "a.png")
    cfg = write_config(tmp_path / "c.yaml", data, label_mode="ids", val=[])
    code, err = main(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 1
    one_line_error(err, "label id 9 is outside the class set 0..2")
    no_checkpoint(tmp_path / "r")


def test_empty_training_set(tiny, tmp_path, capsys):
    _, cfg = tiny
    code, err = main(
        capsys,
        "train",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "train=[{kind: folder, path: " + str(tiny[0]) + ", include: [x]}]",
    )
    assert code == 1
    one_line_error(err, "no image/mask pairs match include ['x']")
    no_checkpoint(tmp_path / "r")


def test_vector_without_class_attribute(tmp_path, capsys):
    img, _ = scene(32, 32, 0)
    image = write_geotiff(tmp_path / "img.tif", img)
    poly = [[500000, 4200000], [500100, 4200000], [500100, 4199900], [500000, 4200000]]
    (tmp_path / "v.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "EPSG:32618"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"kind": "Sea"},
                        "geometry": {"type": "Polygon", "coordinates": [poly]},
                    }
                ],
            }
        )
    )
    cfg = write_config(
        tmp_path / "c.yaml",
        tmp_path,
        val=[],
        train=[{"kind": "vector", "path": str(image), "labels": str(tmp_path / "v.geojson")}],
    )
    code, err = main(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 1
    one_line_error(err, "no attribute 'class'", "--class-attr")
    no_checkpoint(tmp_path / "r")


def test_out_exists_and_resume_with_other_config(tiny, tmp_path, capsys):
    _, cfg = tiny
    run = tmp_path / "r"
    cli.main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"])
    capsys.readouterr()
    code, err = main(capsys, "train", "--config", str(cfg), "--out", str(run))
    assert code == 1
    one_line_error(err, "exists", "--overwrite", "--resume")
    before = (run / "last" / "model.safetensors").read_bytes()
    code, err = main(
        capsys, "train", "--config", str(cfg), "--out", str(run), "--resume", "--set", "lr=0.1"
    )
    assert code == 2  # a value to change, like every bad value
    one_line_error(err, "--resume", "config differs", "lr (0.003 -> 0.1)")
    assert (run / "last" / "model.safetensors").read_bytes() == before


def test_real_cli_bad_config_value_exit_code(tiny, tmp_path):
    _, cfg = tiny
    r = run_cli("train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--loss", "ce+x")
    assert r.returncode == 2 and "Traceback" not in r.stderr  # the same code as click's
    one_line_error(r.stderr, "loss 'ce+x' is not valid")
    r = run_cli("train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--epochs", "x")
    assert r.returncode == 2
    assert not (tmp_path / "r").exists()


def test_nodata_is_ignored_and_kept_out_of_stats(tmp_path):
    from geoseg.train.session import fresh_meta

    img, ids = scene(40, 48, 0)
    img = np.maximum(img, 1)
    img[:, :, :10] = 0  # nodata strip
    image = write_geotiff(tmp_path / "img.tif", img, nodata=0)
    lab = write_geotiff(tmp_path / "lab.tif", ids[None].astype(np.uint8))
    spec = SourceSpec.from_any({"kind": "raster", "path": str(image), "labels": str(lab)})
    (s,) = load_raster_pair(spec, _cfg())
    assert (s.mask[:, :10] == 255).all() and (s.mask[:, 10:] == ids[:, 10:]).all()
    meta = fresh_meta(_cfg(), [s], {})
    expect = img[:, :, 10:].reshape(3, -1).mean(1) / 255.0
    np.testing.assert_allclose(meta.mean, expect, rtol=1e-6)


def test_finetune_options_layer_defaults_then_file_then_flags(tmp_path):
    """The config file's lr beats finetune's own default; an explicit --lr beats the file."""
    from geoseg.commands.train import FINETUNE_DEFAULTS, _config

    cfg_file = tmp_path / "ft.yaml"
    cfg_file.write_text("lr: 3.0e-4\nclasses: [a, b]\n")
    assert _config(cfg_file, {"lr": None}, (), FINETUNE_DEFAULTS).lr == 3e-4
    assert _config(cfg_file, {"lr": 5e-5}, (), FINETUNE_DEFAULTS).lr == 5e-5
    assert _config(None, {"lr": None}, (), FINETUNE_DEFAULTS).lr == 1e-4
    assert _config(cfg_file, {"lr": 5e-5}, ("lr=2e-5",), FINETUNE_DEFAULTS).lr == 2e-5


def _predict_reader_pixels(path):
    from geoseg.io.raster import open_raster

    with open_raster(path) as src:
        data, _ = src.read(0, 0, src.info.height, src.info.width)
    return data


@pytest.mark.integration
def test_train_evaluate_and_predict_see_the_same_jpeg_pixels(shared_data, tmp_path):
    """One decoder (GDAL) for every command: PIL's JPEG decoding differs from GDAL's."""
    from PIL import Image

    from geoseg.data import open_dataset
    from geoseg.io.images import read_image

    tile = shared_data / "dubai-aerial" / "Tile 1"
    jpeg = tile / "images" / "image_part_001.jpg"
    served = _predict_reader_pixels(jpeg)
    assert np.array_equal(read_image(jpeg), served.astype(read_image(jpeg).dtype))
    # the decoder that training used before: a real difference, so the test can fail
    with Image.open(jpeg) as im:
        pil = np.moveaxis(np.asarray(im.convert("RGB")), -1, 0)
    assert (pil != read_image(jpeg)).mean() > 0.01
    # training's folder source and evaluate's folder dataset read the very same pixels
    from geoseg.config import load_yaml
    from geoseg.train.sources import load_samples

    base = load_yaml(REPO / "configs" / "train_dubai.yaml")
    spec = {"kind": "folder", "path": str(tile), "include": ["*/image_part_001"]}
    cfg = build_train_config({**base, **TINY_MODEL}, {"train": [spec], "val": None})
    sample = load_samples(cfg.train, cfg)[0]
    assert np.array_equal(sample.image, read_image(jpeg))
    ds = open_dataset(f"folder:{tile}", str(REPO / "configs" / "dubai.yaml"), None)
    first = next(s for s in ds if s.name.endswith("image_part_001"))
    assert np.array_equal(first.image, read_image(jpeg))


@pytest.mark.integration
def test_one_dataset_config_drives_training_and_evaluation(shared_data, tmp_path):
    """configs/camvid.yaml (images: val, masks: valannot, ignore_ids: [11]) trains as is."""
    from geoseg.config import load_yaml
    from geoseg.data import open_dataset
    from geoseg.io.images import read_id_mask
    from geoseg.train.sources import load_samples

    camvid = shared_data / "camvid"
    base = load_yaml(REPO / "configs" / "camvid.yaml")
    spec = {"kind": "folder", "path": str(camvid), "include": ["*/0016E5_0795*"]}
    cfg = build_train_config({**base, **TINY_MODEL}, {"train": [spec]})
    samples = load_samples(cfg.train, cfg)
    assert samples and all(s.name.startswith("camvid/0016E5_0795") for s in samples)
    raw = read_id_mask(camvid / "valannot" / (samples[0].name.split("/")[1] + ".png"))
    assert (raw == 11).any(), "pick a frame with unlabelled pixels"
    assert np.array_equal(samples[0].mask == 255, raw == 11)
    ds = open_dataset(f"folder:{camvid}", str(REPO / "configs" / "camvid.yaml"), None)
    # one reader: evaluate names, pairs and decodes the samples exactly as training does
    first = next(s for s in ds if s.name == samples[0].name)
    assert np.array_equal(first.mask, samples[0].mask)
    assert np.array_equal(first.image, samples[0].image)
    proc = run_cli(
        "train", "--config", str(REPO / "configs" / "camvid.yaml"),
        "--train", f"folder:{camvid}", "--out", str(tmp_path / "run"), "--epochs", "1",
        "--chips-per-epoch", "2", "--batch-size", "2", "--chip-size", "32",
        "--encoder", "tu-resnet10t", "--set", "model_options={encoder_depth: 3, "
        "decoder_channels: [16, 8, 4]}", "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "best" / "geoseg.json").exists()
