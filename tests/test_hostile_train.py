"""Hostile inputs to train, finetune, model create/info and adapt: refused, nothing changed.

Every refused case runs the real CLI in-process (``hostile.run_cli``) and checks, with
``hostile.assert_refused``, a non-zero exit, exactly one error line naming the problem, no
traceback, and every file and folder under the test's root unchanged (inputs hashed, nothing
left behind). The few accepted cases check what ``--overwrite`` may replace and the modes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_geotiff  # noqa: E402
from helpers import make_checkpoint  # noqa: E402
from hostile import assert_refused, run_cli, run_subprocess, snapshot  # noqa: E402
from train_helpers import write_config, write_folder  # noqa: E402

from geoseg.train.runs import MARKER, is_run  # noqa: E402

FAST = {"epochs": 1, "chips_per_epoch": 4, "batch_size": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Inputs shared by the refused cases: data, config, checkpoints, a run, foreign folders."""
    root = tmp_path_factory.mktemp("hostile")
    data = write_folder(root / "data", n=4)
    write_config(root / "train.yaml", data, **FAST)
    bad = write_folder(root / "baddata", n=2)
    from PIL import Image

    Image.fromarray(np.full((48, 40, 3), 7, np.uint8)).save(bad / "masks" / "part_000.png")
    make_checkpoint(root / "ckpt")
    make_checkpoint(root / "ckpt4", bands=4)
    r = run_cli("train", "--config", root / "train.yaml", "--out", root / "run", "--no-progress")
    assert r.code == 0, r.err
    (root / "userdata").mkdir()
    (root / "userdata" / "config.json").write_text('{"mine": true}\n')
    (root / "userdata" / "scene.tif").write_bytes(b"precious raster")
    (root / "unrelated" / "sub").mkdir(parents=True)
    (root / "unrelated" / "notes.txt").write_text("keep me\n")
    (root / "unrelated" / "sub" / "x.bin").write_bytes(b"\x00\x01")
    (root / "afile.txt").write_text("a file\n")
    shutil.copytree(root / "run", root / "run_plus")
    (root / "run_plus" / "notes.txt").write_text("mine\n")
    (root / "forged").mkdir()
    (root / "forged" / MARKER).write_text('{"kind": "geoseg-run"}')
    (root / "forged" / "config.json").write_text("{}")
    (root / "forged" / "scene.tif").write_bytes(b"precious")
    shutil.copytree(root / "run", root / "bad_marker")
    (root / "bad_marker" / MARKER).write_text("[not json")
    shutil.copytree(root / "ckpt", root / "ckpt_plus")
    (root / "ckpt_plus" / "notes.txt").write_text("mine\n")
    (root / "link").symlink_to(root / "unrelated")
    img = np.random.default_rng(0).integers(1, 255, (3, 64, 64)).astype(np.uint8)
    write_geotiff(root / "target.tif", img)
    write_geotiff(root / "nodata.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    write_geotiff(root / "nan.tif", np.full((3, 64, 64), np.nan, np.float32))
    # a run holding user content under names geoseg's own entries and temporaries use
    shutil.copytree(root / "run", root / "run_tmpdir")
    (root / "run_tmpdir" / ".last.mybackup.tmp").mkdir()
    (root / "run_tmpdir" / ".last.mybackup.tmp" / "precious.txt").write_text("keep\n")
    shutil.copytree(root / "run", root / "run_logdir")
    (root / "run_logdir" / "log.csv").unlink()
    (root / "run_logdir" / "log.csv").mkdir()
    (root / "run_logdir" / "log.csv" / "scene.tif").write_bytes(b"precious")
    shutil.copytree(root / "run", root / "run_cfgdir")
    (root / "run_cfgdir" / "config.json").unlink()
    (root / "run_cfgdir" / "config.json").mkdir()
    (root / "run_cfgdir" / "config.json" / "mine.json").write_text("{}")
    shutil.copytree(root / "run", root / "run_oldtmp")
    (root / "run_oldtmp" / ".best.x.tmp.old" / "photos").mkdir(parents=True)
    (root / "run_oldtmp" / ".best.x.tmp.old" / "photos" / "a.jpg").write_bytes(b"jpeg")
    # a decompression bomb: a valid PNG header declaring 20000 x 20000 pixels
    shutil.copytree(data, root / "bombdata")
    _bomb_png(root / "bombdata" / "images" / "part_001.png", 20000, 20000)
    # label rasters that cannot be used as they are
    from train_helpers import scene

    img, ids = scene(64, 64, 0)
    write_geotiff(root / "img.tif", img)
    write_geotiff(root / "lab_float.tif", (ids + 0.9).astype(np.float32))
    write_geotiff(root / "lab_nan.tif", ids.astype(np.float32), nodata=float("nan"))
    write_geotiff(
        root / "lab_3band.tif", np.stack([ids, ids * 0 + 7, ids * 0 + 7]).astype(np.uint8)
    )
    for name, mask in (
        ("floatmask", (ids[:48, :40] + 0.9).astype(np.float32)[None]),
        ("bandmask", np.stack([ids[:48, :40]] * 3).astype(np.uint8)),
    ):
        folder = root / name
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        shutil.copy(data / "images" / "part_000.png", folder / "images" / "part_000.png")
        write_geotiff(folder / "masks" / "part_000.tif", mask)
    (root / "bad.geojson").write_text("[1, 2]")
    return root


def _bomb_png(path: Path, width: int, height: int) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))


def _refused(root: Path, args: list, *words: str) -> None:
    before = snapshot(root)
    result = run_cli(*[str(a).replace("{root}", str(root)) for a in args])
    assert_refused(result, before, snapshot(root), *words)


TRAIN = ["train", "--config", "{root}/train.yaml", "--no-progress", "-q"]
RASTER = "train=[{{kind: raster, path: '{{root}}/img.tif', labels: '{{root}}/{}.tif'}}]"
FINETUNE = ["finetune", "--config", "{root}/train.yaml", "--no-progress", "-q"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")

TRAIN_CASES = [
    # --out: --overwrite replaces only geoseg's own runs; never a link, a file or an input
    ("user-data", ["--out", "{root}/userdata", "--overwrite"], ["not a geoseg run"]),
    ("checkpoint", ["--out", "{root}/ckpt", "--overwrite"], ["not a geoseg run"]),
    ("unrelated", ["--out", "{root}/unrelated", "--overwrite"], ["not a geoseg run"]),
    ("run-plus-file", ["--out", "{root}/run_plus", "--overwrite"], ["not a geoseg run"]),
    ("forged-marker", ["--out", "{root}/forged", "--overwrite"], ["not a geoseg run"]),
    ("bad-marker", ["--out", "{root}/bad_marker", "--overwrite"], ["not a geoseg run"]),
    ("data-input", ["--out", "{root}/data", "--overwrite"], ["input"]),
    ("inside-input", ["--out", "{root}/data/images/run"], ["input"]),
    ("file", ["--out", "{root}/afile.txt", "--overwrite"], ["is a file"]),
    ("symlink", ["--out", "{root}/link", "--overwrite"], ["symbolic link"]),
    ("parent-is-a-file", ["--out", "{root}/afile.txt/sub/run"], ["afile.txt"]),
    ("run-exists", ["--out", "{root}/run"], ["exists", "--overwrite"]),
    ("resume-nothing", ["--out", "{root}/unrelated", "--resume"], ["no resumable run"]),
    # failures before the first epoch leave nothing behind
    pytest.param("cuda", ["--out", "{root}/new", "--device", "cuda"], ["cuda"], marks=NO_CUDA),
    ("fp16-cpu", ["--out", "{root}/new", "--device", "cpu", "--precision", "fp16"], ["fp16"]),
    ("no-data", ["--out", "{root}/new", "--train", "folder:{root}/nosuch"], ["images/"]),
    ("bad-mask", ["--out", "{root}/new", "--train", "folder:{root}/baddata"], ["#070707"]),
    # training values
    ("chip-absurd", ["--out", "{root}/new", "--chip-size", "100000"], ["chip_size", "65536"]),
    ("chip-too-big", ["--out", "{root}/new", "--chip-size", "1000"], ["larger than every"]),
    ("chip-zero", ["--out", "{root}/new", "--chip-size", "0"], ["chip_size"]),
    ("lr-nan", ["--out", "{root}/new", "--lr", "nan"], ["lr"]),
    ("lr-inf", ["--out", "{root}/new", "--lr", "inf"], ["lr"]),
    ("lr-negative", ["--out", "{root}/new", "--lr", "-1"], ["lr"]),
    ("set-yaml", ["--out", "{root}/new", "--set", "lr=[1,2"], ["--set"]),
    ("set-not-kv", ["--out", "{root}/new", "--set", "lr"], ["--set"]),
    ("set-lr-text", ["--out", "{root}/new", "--set", "lr=abc"], ["lr", "abc"]),
    ("set-lr-list", ["--out", "{root}/new", "--set", "lr=[1, 2]"], ["lr"]),
    ("set-unknown", ["--out", "{root}/new", "--set", "nosuch=1"], ["nosuch"]),
    ("epochs-0", ["--out", "{root}/new", "--epochs", "0"], ["epochs"]),
    ("epochs-neg", ["--out", "{root}/new", "--epochs", "-1"], ["epochs"]),
    ("epochs-float", ["--out", "{root}/new", "--set", "epochs=1.5"], ["epochs"]),
    ("epochs-text", ["--out", "{root}/new", "--set", "epochs=abc"], ["epochs"]),
    ("batch-0", ["--out", "{root}/new", "--batch-size", "0"], ["batch_size"]),
    ("chips-0", ["--out", "{root}/new", "--chips-per-epoch", "0"], ["chips_per_epoch"]),
    ("threads-0", ["--out", "{root}/new", "--threads", "0"], ["num_threads"]),
    ("seed-neg", ["--out", "{root}/new", "--seed", "-1"], ["seed"]),
    ("warmup-neg", ["--out", "{root}/new", "--set", "warmup_steps=-1"], ["warmup_steps"]),
    ("overlap-big", ["--out", "{root}/new", "--set", "grid_overlap=32"], ["grid_overlap"]),
    ("gamma-inf", ["--out", "{root}/new", "--set", "focal_gamma=.inf"], ["focal_gamma"]),
    ("weights-nan", ["--out", "{root}/new", "--set", "loss_weights=[.nan]"], ["loss_weights"]),
    ("bool-threads", ["--out", "{root}/new", "--set", "num_threads=true"], ["num_threads"]),
    ("device-text", ["--out", "{root}/new", "--set", "device=tpu"], ["device"]),
    ("train-number", ["--out", "{root}/new", "--set", "train=5"], ["data sources"]),
    ("source-path-int", ["--out", "{root}/new", "--set", "train=[{path: 5}]"], ["path"]),
    (
        "colour-300",
        ["--out", "{root}/new", "--set", "classes=[{name: a, colour: [300, 0, 0]}]"],
        ["300", "0..255"],
    ),
    (
        "colour-hex",
        ["--out", "{root}/new", "--set", "classes=[{name: a, colour: '#GGGGGG'}]"],
        ["#GGGGGG"],
    ),
    (
        "colour-two",
        ["--out", "{root}/new", "--set", "classes=[{name: a, colour: [1, 2]}]"],
        ["colour"],
    ),
    ("class-twice", ["--out", "{root}/new", "--set", "classes=[a, a]"], ["twice"]),
    ("no-classes", ["--out", "{root}/new", "--set", "classes=[]"], ["no classes"]),
    ("classes-text", ["--out", "{root}/new", "--set", "classes=abc"], ["classes"]),
    (
        "decoder-2e9",
        ["--out", "{root}/new", "--set", "model_options={decoder_channels: 2000000000}"],
        ["decoder_channels", "4096"],
    ),
    (
        "option-unknown",
        ["--out", "{root}/new", "--set", "model_options={nosuch: 1}"],
        ["nosuch", "valid"],
    ),
    ("options-list", ["--out", "{root}/new", "--set", "model_options=[1]"], ["model_options"]),
    (
        "option-aux",
        ["--out", "{root}/new", "--set", "model_options={aux_params: {classes: 2}}"],
        ["aux_params", "not supported"],
    ),
    (
        "option-depth",
        ["--out", "{root}/new", "--set", "model_options={encoder_depth: 9}"],
        ["encoder_depth"],
    ),
    ("scale-range-one", ["--out", "{root}/new", "--set", "scale_range=[1]"], ["scale_range"]),
    (
        "set-alias-laughs",  # a billion laughs in one --set value
        ["--out", "{root}/new", "--set", "seed=[&a [1, 1], &b [*a, *a], [*b, *b]]"],
        ["--set", "alias"],
    ),
    ("set-deep", ["--out", "{root}/new", "--set", "seed=" + "[" * 40 + "]" * 40], ["nesting"]),
    ("ignore-colours-int", ["--out", "{root}/new", "--set", "ignore_colours=5"], ["ignore_col"]),
    ("class-weights-text", ["--out", "{root}/new", "--set", "class_weights=x"], ["class_weig"]),
    ("flip-text", ["--out", "{root}/new", "--set", "flip=maybe"], ["flip"]),
    ("encoder-int", ["--out", "{root}/new", "--set", "encoder=5"], ["encoder"]),
    ("class-map-int", ["--out", "{root}/new", "--set", "class_map=5"], ["class_map"]),
    ("source-kind", ["--out", "{root}/new", "--set", "train=[{kind: x, path: y}]"], ["kind"]),
    ("arch-unknown", ["--out", "{root}/new", "--set", "arch=nosuch"], ["nosuch"]),
    # --overwrite checks what a run's entries hold, not only their names
    ("run-temp-folder", ["--out", "{root}/run_tmpdir", "--overwrite"], ["not a geoseg run"]),
    ("run-log-folder", ["--out", "{root}/run_logdir", "--overwrite"], ["not a geoseg run"]),
    ("run-config-folder", ["--out", "{root}/run_cfgdir", "--overwrite"], ["not a geoseg run"]),
    ("run-old-folder", ["--out", "{root}/run_oldtmp", "--overwrite"], ["not a geoseg run"]),
    # unreadable or unusable data
    (
        "image-bomb",
        ["--out", "{root}/new", "--train", "folder:{root}/bombdata"],
        ["part_001.png", "20000x20000 pixels"],
    ),
    (
        "label-float",
        ["--out", "{root}/new", "--set", RASTER.format("lab_float")],
        ["lab_float.tif", "float32", "integers"],
    ),
    (
        "label-nan-nodata",
        ["--out", "{root}/new", "--set", RASTER.format("lab_nan")],
        ["lab_nan.tif", "float32"],
    ),
    (
        "label-3-bands",
        ["--out", "{root}/new", "--set", RASTER.format("lab_3band")],
        ["lab_3band.tif", "3 bands"],
    ),
    (
        "label-missing",
        ["--out", "{root}/new", "--set", RASTER.format("nosuch")],
        ["nosuch.tif", "does not exist"],
    ),
    (
        "ids-mask-float",
        ["--out", "{root}/new", "--train", "folder:{root}/floatmask", "--set", "label_mode=ids"],
        ["part_000.tif", "float32"],
    ),
    (
        "ids-mask-3-bands",
        ["--out", "{root}/new", "--train", "folder:{root}/bandmask", "--set", "label_mode=ids"],
        ["part_000.tif", "3 bands"],
    ),
    (
        "vector-not-geojson",
        [
            "--out",
            "{root}/new",
            "--set",
            "train=[{kind: vector, path: '{root}/img.tif', labels: '{root}/bad.geojson'}]",
        ],
        ["bad.geojson", "FeatureCollection"],
    ),
    (
        "colour-twice",
        [
            "--out",
            "{root}/new",
            "--set",
            "classes=[{name: Sea, colour: '#0000FF'}, {name: Lake, colour: '#0000FF'}]",
        ],
        ["'Sea'", "'Lake'", "same colour", "#0000FF"],
    ),
    (
        "model-too-big",
        [
            "--out",
            "{root}/new",
            "--set",
            "model_options={encoder_depth: 5, decoder_channels: [4096, 4096, 4096, 4096, 4096]}",
        ],
        ["parameters", "1,000,000,000"],
    ),
]


def _ids(cases: list) -> list[str]:
    return [c.values[0] if hasattr(c, "marks") else c[0] for c in cases]


@pytest.mark.parametrize("name,args,words", TRAIN_CASES, ids=_ids(TRAIN_CASES))
def test_train_refuses(world, name, args, words):
    _refused(world, TRAIN + args, *words)


FINETUNE_CASES = [
    ("model-missing", ["--model", "{root}/nosuch"], ["does not exist"]),
    ("model-file", ["--model", "{root}/afile.txt"], ["not a geoseg checkpoint"]),
    ("model-folder", ["--model", "{root}/unrelated"], ["not a geoseg checkpoint"]),
    ("model-bands", ["--model", "{root}/ckpt4"], ["expects 4"]),
    ("class-map-old", ["--model", "{root}/ckpt", "--class-map", "bogus=Sea"], ["bogus"]),
    ("class-map-new", ["--model", "{root}/ckpt", "--class-map", "c0=Nope"], ["Nope"]),
    ("class-map-form", ["--model", "{root}/ckpt", "--class-map", "c0"], ["OLD=NEW"]),
    ("class-map-empty", ["--model", "{root}/ckpt", "--class-map", "c0="], ["OLD=NEW"]),
    ("out-is-model", ["--model", "{root}/ckpt", "--overwrite", "--out-here"], ["input"]),
    ("out-holds-model", ["--model", "{root}/run/best", "--overwrite", "--out-run"], ["input"]),
    ("lr-nan", ["--model", "{root}/ckpt", "--lr", "nan"], ["lr"]),
    pytest.param("cuda", ["--model", "{root}/ckpt", "--device", "cuda"], ["cuda"], marks=NO_CUDA),
]


@pytest.mark.parametrize("name,args,words", FINETUNE_CASES, ids=_ids(FINETUNE_CASES))
def test_finetune_refuses(world, name, args, words):
    out = ["--out", "{root}/new"]
    if "--out-here" in args:
        args, out = [a for a in args if a != "--out-here"], ["--out", "{root}/ckpt"]
    if "--out-run" in args:
        args, out = [a for a in args if a != "--out-run"], ["--out", "{root}/run"]
    _refused(world, FINETUNE + args + out, *words)


# ------------------------------------------------------------------------------- resume
def _garbage(p: Path) -> None:
    p.write_bytes(b"\x00garbage\xff" * 10)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:100])


def _state(**change):
    def edit(p: Path) -> None:
        state = torch.load(p, weights_only=True)
        state.update(change)
        torch.save({k: v for k, v in state.items() if v is not None}, p)

    return edit


def _row(**change):
    def edit(p: Path) -> None:
        state = torch.load(p, weights_only=True)
        state["rows"][0].update(change)
        state["rows"][0] = {k: v for k, v in state["rows"][0].items() if v is not None}
        torch.save(state, p)

    return edit


def _steps(step: int):
    """A consistent but impossible step count (the log row and the state agree)."""

    def edit(p: Path) -> None:
        state = torch.load(p, weights_only=True)
        state["step"] = state["rows"][-1]["step"] = step
        torch.save(state, p)

    return edit


def _config(change):
    def edit(p: Path) -> None:
        doc = json.loads(p.read_text())
        change(doc["config"])
        p.write_text(json.dumps(doc))

    return edit


def _fingerprint(value: str):
    def edit(p: Path) -> None:
        doc = json.loads(p.read_text())
        doc["fingerprint"] = value
        p.write_text(json.dumps(doc))

    return edit


def _move_and_link(p: Path) -> None:
    mine = p.parent.parent / "mylast"
    shutil.move(p, mine)
    p.symlink_to(mine)


def _to_folder(p: Path) -> None:
    p.unlink()
    p.mkdir()
    (p / "scene.tif").write_bytes(b"precious")


RESUME_CASES = [
    ("config-not-json", "config.json", lambda p: p.write_text("{not json"), "config.json"),
    ("config-list", "config.json", lambda p: p.write_text("[1, 2]"), "config.json"),
    ("config-binary", "config.json", _garbage, "config.json"),
    ("config-no-config", "config.json", lambda p: p.write_text('{"config": 3}'), "config.json"),
    ("state-garbage", "last/train_state.pt", _garbage, "train_state.pt"),
    ("state-truncated", "last/train_state.pt", _truncate, "train_state.pt"),
    ("state-empty", "last/train_state.pt", lambda p: p.write_bytes(b""), "train_state.pt"),
    ("state-list", "last/train_state.pt", lambda p: torch.save([1, 2], p), "train_state.pt"),
    ("state-object", "last/train_state.pt", _state(epoch=Path("x")), "train_state.pt"),
    ("state-no-epoch", "last/train_state.pt", _state(epoch=None), "train_state.pt"),
    ("state-epoch-text", "last/train_state.pt", _state(epoch="1"), "train_state.pt"),
    ("state-epoch-neg", "last/train_state.pt", _state(epoch=-1), "train_state.pt"),
    ("state-step-float", "last/train_state.pt", _state(step=1.5), "train_state.pt"),
    ("state-best-text", "last/train_state.pt", _state(best_miou="x"), "train_state.pt"),
    ("state-rows", "last/train_state.pt", _state(rows=[]), "train_state.pt"),
    ("state-rng", "last/train_state.pt", _state(torch_rng=torch.zeros(3)), "train_state.pt"),
    ("state-optimizer", "last/train_state.pt", _state(optimizer=[1]), "train_state.pt"),
    (
        "state-opt-groups",
        "last/train_state.pt",
        _state(optimizer={"state": {}, "param_groups": [{"params": [0]}]}),
        "train_state.pt",
    ),
    ("state-row-empty", "last/train_state.pt", _state(rows=[{}]), "log row 1"),
    ("state-row-list", "last/train_state.pt", _state(rows=[[1]]), "log row 1"),
    ("state-miou-text", "last/train_state.pt", _row(val_miou="x"), "val_miou"),
    ("state-miou-inf", "last/train_state.pt", _row(val_miou=float("inf")), "val_miou"),
    ("state-iou-text", "last/train_state.pt", _row(iou_Sea=[1]), "iou_Sea"),
    ("state-row-epoch", "last/train_state.pt", _row(epoch=5), "log row 1"),
    ("state-row-unknown", "last/train_state.pt", _row(evil=1), "evil"),
    ("state-row-loss", "last/train_state.pt", _row(train_loss=None), "train_loss"),
    ("state-step-row", "last/train_state.pt", _state(step=999), "step 999"),
    ("state-step-zero", "last/train_state.pt", _state(step=0), "step 0"),
    ("state-step-plan", "last/train_state.pt", _steps(999), "steps per epoch"),
    ("config-empty", "config.json", lambda p: p.write_text('{"config": {}}'), "lacks"),
    ("config-no-lr", "config.json", _config(lambda c: c.pop("lr")), "lacks the option(s) lr"),
    ("config-lr", "config.json", _config(lambda c: c.update(lr=0.5)), "lr (0.5"),
    ("config-fingerprint", "config.json", _fingerprint("0" * 16), "fingerprint"),
    ("last-symlink", "last", _move_and_link, "not a geoseg run"),
    ("best-plus-file", "best/notes.txt", lambda p: p.write_text("mine\n"), "not a geoseg run"),
    ("log-folder", "log.csv", _to_folder, "not a geoseg run"),
    ("run-plus-file", "notes.txt", lambda p: p.write_text("mine\n"), "not a geoseg run"),
    ("last-weights", "last/model.safetensors", _garbage, "model.safetensors"),
    (
        "last-classes",
        "last/geoseg.json",
        lambda p: p.write_text(p.read_text().replace('"Sea"', '"Lake"')),
        "not this run",
    ),
]


@pytest.mark.parametrize("name,file,edit,word", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_refuses_corrupt_run(world, tmp_path, name, file, edit, word):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run, symlinks=True)
    edit(run / file)
    args = [*TRAIN, "--out", run, "--resume", "--epochs", "2"]
    before = snapshot(tmp_path)
    result = run_cli(*[str(a).replace("{root}", str(world)) for a in args])
    assert_refused(result, before, snapshot(tmp_path), word)


# ------------------------------------------------------------------------------- checkpoints
def _meta_edit(**change):
    def edit(d: dict) -> object:
        d.update(change)
        return d

    return edit


META_CASES = [
    ("std-0", _meta_edit(std=[0.0, 0.25, 0.25]), "std"),
    ("std-neg", _meta_edit(std=[-1.0, 0.25, 0.25]), "std"),
    ("std-nan", _meta_edit(std=[float("nan"), 0.25, 0.25]), "std"),
    ("std-inf", _meta_edit(std=[float("inf"), 0.25, 0.25]), "std"),
    ("mean-nan", _meta_edit(mean=[float("nan"), 0.5, 0.5]), "mean"),
    ("mean-inf", _meta_edit(mean=[float("-inf"), 0.5, 0.5]), "mean"),
    ("mean-text", _meta_edit(mean=["a", 0.5, 0.5]), "mean"),
    ("scale-0", _meta_edit(scale=0), "scale"),
    ("scale-neg", _meta_edit(scale=-255), "scale"),
    ("scale-nan", _meta_edit(scale=float("nan")), "scale"),
    ("scale-inf", _meta_edit(scale=float("inf")), "scale"),
    ("scale-text", _meta_edit(scale="255"), "scale"),
    ("tile-0", _meta_edit(tile_size=0), "tile_size"),
    ("tile-neg", _meta_edit(tile_size=-64), "tile_size"),
    ("tile-huge", _meta_edit(tile_size=10**9), "tile_size"),
    ("colour-300", _meta_edit(colours=[[300, 0, 0], [0, 0, 0], [1, 1, 1], [2, 2, 2]]), "300"),
    ("colour-neg", _meta_edit(colours=[[-1, 0, 0], [0, 0, 0], [1, 1, 1], [2, 2, 2]]), "colour"),
    ("colour-two", _meta_edit(colours=[[1, 0], [0, 0, 0], [1, 1, 1], [2, 2, 2]]), "colour"),
    ("colour-float", _meta_edit(colours=[[1.5, 0, 0], [0, 0, 0], [1, 1, 1], [2, 2, 2]]), "colour"),
    ("colours-text", _meta_edit(colours="red"), "colours"),
    ("classes-0", _meta_edit(classes=0, class_names=[], colours=[]), "classes"),
    ("classes-text", _meta_edit(classes="4"), "classes"),
    ("classes-huge", _meta_edit(classes=10**6), "classes"),
    ("bands-0", _meta_edit(in_channels=0, mean=[], std=[]), "in_channels"),
    ("bands-huge", _meta_edit(in_channels=10**8), "in_channels"),
    ("names-ints", _meta_edit(class_names=[1, 2, 3, 4]), "class_names"),
    ("arch-int", _meta_edit(arch=5), "arch"),
    ("options-list", _meta_edit(model_options=[1, 2]), "model_options"),
    ("extra-list", _meta_edit(extra=[1]), "extra"),
    ("decoder-2e9", _meta_edit(model_options={"decoder_channels": [2 * 10**9, 8, 4]}), "4096"),
    ("option-unknown", _meta_edit(model_options={"nosuch": 1}), "nosuch"),
    (
        "model-too-big",
        _meta_edit(model_options={"encoder_depth": 5, "decoder_channels": [4096] * 5}),
        "parameters",
    ),
    ("option-weights", _meta_edit(model_options={"encoder_weights": "imagenet"}), "not allowed"),
    ("format-future", _meta_edit(format_version=99), "format_version"),
    ("missing-field", lambda d: {k: v for k, v in d.items() if k != "std"}, "std"),
    ("a-list", lambda d: [d], "not a mapping"),
    ("a-number", lambda d: 5, "not a mapping"),
    ("a-string", lambda d: "model", "not a mapping"),
    ("not-json", None, "corrupt"),
    ("binary", b"\xff\xfe\x00", "corrupt"),
]


def _bad_checkpoint(tmp_path: Path, edit) -> Path:
    ckpt = make_checkpoint(tmp_path / "bad")
    meta = ckpt / "geoseg.json"
    if edit is None:
        meta.write_text('{"arch": ')
    elif isinstance(edit, bytes):
        meta.write_bytes(edit)
    else:
        meta.write_text(json.dumps(edit(json.loads(meta.read_text()))))
    return ckpt


# finetune loads checkpoints as adapt does: a sample of the cases suffices; model info only
# reads geoseg.json (option names are checked when the model is built)
META_RUNS = [
    (command, *case)
    for command in ("info", "adapt", "finetune")
    for case in META_CASES
    if (
        command != "finetune"
        or case[0] in ("std-nan", "decoder-2e9", "option-unknown", "a-list", "model-too-big")
    )
    and (command != "info" or case[0] not in ("option-unknown", "model-too-big"))
]


def _adapt_args(world: Path) -> list:
    """``geoseg adapt`` of the world's target raster by a fast method (no default method)."""
    return ["adapt", world / "target.tif", "--method", "adabn"]


@pytest.mark.parametrize(
    "command,name,edit,word", META_RUNS, ids=[f"{c[0]}-{c[1]}" for c in META_RUNS]
)
def test_corrupt_checkpoint_refused(world, tmp_path, command, name, edit, word):
    ckpt = _bad_checkpoint(tmp_path, edit)
    args = {
        "info": ["model", "info", ckpt],
        "adapt": [*_adapt_args(world), "--model", ckpt, "--out", tmp_path / "o"],
        "finetune": [*FINETUNE, "--model", ckpt, "--out", tmp_path / "o"],
    }[command]
    before = snapshot(tmp_path)
    result = run_cli(*[str(a).replace("{root}", str(world)) for a in args])
    assert_refused(result, before, snapshot(tmp_path), "geoseg.json", word)


def test_corrupt_weights_refused(world, tmp_path):
    ckpt = make_checkpoint(tmp_path / "bad")
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 64)
    before = snapshot(tmp_path)
    result = run_cli(*_adapt_args(world), "--model", ckpt, "--out", tmp_path / "o")
    assert_refused(result, before, snapshot(tmp_path), "model.safetensors", "corrupt")
    other = make_checkpoint(tmp_path / "other", classes=2)  # weights of another shape
    shutil.copy(other / "model.safetensors", ckpt / "model.safetensors")
    before = snapshot(tmp_path)
    args = [str(a).replace("{root}", str(world)) for a in FINETUNE]
    result = run_cli(*args, "--model", ckpt, "--out", tmp_path / "o")
    result2 = run_cli(*_adapt_args(world), "--model", ckpt, "--out", tmp_path / "o")
    after = snapshot(tmp_path)
    assert_refused(result, before, after, "model.safetensors")
    assert_refused(result2, before, after, "model.safetensors")


CREATE = ["model", "create", "--arch", "unet", "--encoder", "resnet18", "--tile", "64"]
TINY_OPTS = ["--option", "encoder_depth=3", "--option", "decoder_channels=[16,8,4]"]

CREATE_CASES = [
    ("bands-huge", ["{root}/new", "--classes", "2", "--bands", "100000000"], ["--bands", "1024"]),
    ("bands-0", ["{root}/new", "--classes", "2", "--bands", "0"], ["--bands"]),
    ("classes-0", ["{root}/new", "--classes", "0"], ["--classes"]),
    ("classes-huge", ["{root}/new", "--classes", "70000"], ["--classes", "65535"]),
    ("scale-0", ["{root}/new", "--classes", "2", "--scale", "0"], ["--scale"]),
    ("scale-neg", ["{root}/new", "--classes", "2", "--scale", "-1"], ["--scale"]),
    ("scale-nan", ["{root}/new", "--classes", "2", "--scale", "nan"], ["--scale"]),
    ("scale-inf", ["{root}/new", "--classes", "2", "--scale", "inf"], ["--scale"]),
    ("tile-0", ["{root}/new", "--classes", "2", "--tile", "0"], ["--tile"]),
    ("tile-neg", ["{root}/new", "--classes", "2", "--tile", "-5"], ["--tile"]),
    ("tile-huge", ["{root}/new", "--classes", "2", "--tile", "1000000"], ["--tile"]),
    ("seed-neg", ["{root}/new", "--classes", "2", "--seed", "-1"], ["--seed"]),
    ("option-unknown", ["{root}/new", "--classes", "2", "--option", "nosuch=1"], ["nosuch"]),
    (
        "decoder-2e9",
        ["{root}/new", "--classes", "2", "--option", "decoder_channels=2000000000"],
        ["4096"],
    ),
    (
        "option-weights",
        ["{root}/new", "--classes", "2", "--option", "encoder_weights=imagenet"],
        ["encoder_weights"],
    ),
    ("option-bands", ["{root}/new", "--classes", "2", "--option", "in_channels=5"], ["in_chan"]),
    ("option-yaml", ["{root}/new", "--classes", "2", "--option", "x=[1"], ["--option"]),
    (
        "option-aux",
        ["{root}/new", "--classes", "2", "--option", "aux_params={classes: 2}"],
        ["aux_params"],
    ),
    ("option-form", ["{root}/new", "--classes", "2", "--option", "novalue"], ["--option"]),
    ("names-count", ["{root}/new", "--classes", "3", "--class-names", "a,b"], ["--class-names"]),
    ("names-empty", ["{root}/new", "--classes", "2", "--class-names", "a,"], ["--class-names"]),
    ("arch-unknown", ["{root}/new", "--classes", "2", "--arch", "nosuch"], ["nosuch"]),
    ("encoder-unknown", ["{root}/new", "--classes", "2", "--encoder", "nosuch"], ["nosuch"]),
    ("out-folder", ["{root}/unrelated", "--classes", "2", "--overwrite"], ["not a geoseg"]),
    ("out-run", ["{root}/run", "--classes", "2", "--overwrite"], ["not a geoseg"]),
    ("out-data", ["{root}/userdata", "--classes", "2", "--overwrite"], ["not a geoseg"]),
    ("out-ckpt-plus", ["{root}/ckpt_plus", "--classes", "2", "--overwrite"], ["not a geoseg"]),
    ("out-file", ["{root}/afile.txt", "--classes", "2", "--overwrite"], ["not a folder"]),
    ("out-link", ["{root}/link", "--classes", "2", "--overwrite"], ["symbolic link"]),
    ("out-exists", ["{root}/ckpt", "--classes", "2"], ["exists", "--overwrite"]),
    ("out-no-parent", ["{root}/nosuch/m", "--classes", "2"], ["does not exist"]),
    (
        "model-too-big",
        ["{root}/new", "--classes", "2", "--option", "decoder_channels=[4096,4096,4096,4096,4096]"],
        ["parameters", "1,000,000,000"],
    ),
]


@pytest.mark.parametrize("name,args,words", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_model_create_refuses(world, name, args, words):
    opts = [] if any("decoder_channels" in str(a) for a in args) else TINY_OPTS
    _refused(world, CREATE + args + opts, *words)


ADAPT = ["adapt", "{root}/target.tif", "--model", "{root}/ckpt", "--method", "stats"]
BY_ADABN = ["--method", "adabn"]  # adapt has no default method
ADAPT_CASES = [
    (
        "all-nodata",
        ["adapt", "{root}/nodata.tif", "--model", "{root}/ckpt", "--out", "{root}/new", *BY_ADABN],
        ["0 valid pixel(s)"],
    ),
    (
        "all-nan",
        ["adapt", "{root}/nan.tif", "--model", "{root}/ckpt", "--out", "{root}/new", *BY_ADABN],
        ["0 valid pixel(s)"],
    ),
    ("windows-0", [*ADAPT, "--out", "{root}/new", "--windows", "0"], ["--windows"]),
    ("tile-0", [*ADAPT, "--out", "{root}/new", "--tile", "0"], ["--tile"]),
    ("tile-huge", [*ADAPT, "--out", "{root}/new", "--tile", "100000"], ["--tile"]),
    ("windows-huge", [*ADAPT, "--out", "{root}/new", "--windows", "100000000"], ["--windows"]),
    ("fraction-0", [*ADAPT, "--out", "{root}/new", "--fraction", "0"], ["--fraction"]),
    ("fraction-big", [*ADAPT, "--out", "{root}/new", "--fraction", "1.5"], ["--fraction"]),
    ("fraction-nan", [*ADAPT, "--out", "{root}/new", "--fraction", "nan"], ["--fraction"]),
    ("lr-nan", [*ADAPT, "--out", "{root}/new", "--lr", "nan"], ["--lr"]),
    ("lr-inf", [*ADAPT, "--out", "{root}/new", "--lr", "inf"], ["--lr"]),
    ("steps-neg", [*ADAPT, "--out", "{root}/new", "--steps", "-1"], ["--steps"]),
    ("threads-0", [*ADAPT, "--out", "{root}/new", "--threads", "0"], ["--threads"]),
    ("seed-neg", [*ADAPT, "--out", "{root}/new", "--seed", "-1"], ["--seed"]),
    ("out-is-model", [*ADAPT, "--out", "{root}/ckpt", "--overwrite"], ["input"]),
    ("out-in-model", [*ADAPT, "--out", "{root}/ckpt/sub"], ["input"]),
    ("out-is-raster", [*ADAPT, "--out", "{root}/target.tif", "--overwrite"], ["input"]),
    ("out-folder", [*ADAPT, "--out", "{root}/unrelated", "--overwrite"], ["not a geoseg"]),
    ("out-file", [*ADAPT, "--out", "{root}/afile.txt", "--overwrite"], ["not a folder"]),
    ("out-link", [*ADAPT, "--out", "{root}/link", "--overwrite"], ["symbolic link"]),
    ("out-exists", [*ADAPT, "--out", "{root}/run/best"], ["exists"]),
    (
        "model-file",
        [*ADAPT[:2], "--model", "{root}/afile.txt", "--out", "{root}/new", *BY_ADABN],
        ["not a geoseg checkpoint"],
    ),
    (
        "model-bands",
        [*ADAPT[:2], "--model", "{root}/ckpt4", "--out", "{root}/new", *BY_ADABN],
        ["bands"],
    ),
    ("raster-missing", [*ADAPT, "{root}/nosuch.tif", "--out", "{root}/new"], ["nosuch.tif"]),
    ("method-bogus", [*ADAPT, "--out", "{root}/new", "--method", "bogus"], ["--method"]),
]


@pytest.mark.parametrize("name,args,words", ADAPT_CASES, ids=[c[0] for c in ADAPT_CASES])
def test_adapt_refuses(world, name, args, words):
    _refused(world, args, *words)


# ------------------------------------------------------------------------------- accepted
def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _train(world: Path, *args: object):
    return run_cli(*[str(a).replace("{root}", str(world)) for a in (*TRAIN, *args)])


def test_overwrite_replaces_only_an_earlier_run(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run, symlinks=True)
    assert (run / MARKER).is_file()
    old = (run / "last" / "model.safetensors").read_bytes()
    r = _train(world, "--out", run, "--overwrite", "--seed", "7")
    assert r.code == 0, r.err
    assert (run / "last" / "model.safetensors").read_bytes() != old
    assert _listing(tmp_path) == ["run"]  # no temporaries or .old folders left beside it
    assert _listing(run) == sorted([MARKER, "best", "config.json", "last", "log.csv"])


class Boom(Exception):
    """Raised from inside training: a run failing during its first epoch."""


def _fail_training(world: Path, out: Path, **kw) -> None:
    """Run training into ``out`` and make it fail at its first step."""
    from geoseg.config import load_yaml
    from geoseg.train.config import build_train_config
    from geoseg.train.loop import Callbacks
    from geoseg.train.session import run_training

    def boom(info):
        raise Boom

    cfg = build_train_config(load_yaml(world / "train.yaml"))
    with pytest.raises(Boom):
        run_training(cfg, str(out), callbacks=Callbacks(on_step=boom), **kw)


def test_failed_run_leaves_nothing_and_keeps_the_earlier_run(world, tmp_path):
    _fail_training(world, tmp_path / "fresh")
    assert _listing(tmp_path) == []
    run = tmp_path / "run"
    shutil.copytree(world / "run", run, symlinks=True)
    before = snapshot(tmp_path)
    _fail_training(world, run, overwrite=True)
    assert snapshot(tmp_path) == before


def test_missing_parents_of_a_run_are_made_and_removed_again_on_failure(world, tmp_path):
    _fail_training(world, tmp_path / "runs" / "a" / "run")
    assert _listing(tmp_path) == []  # the parents it made are gone again
    r = _train(world, "--out", tmp_path / "runs" / "a" / "run")
    assert r.code == 0, r.err
    assert _listing(tmp_path / "runs" / "a" / "run") == sorted(
        [MARKER, "best", "config.json", "last", "log.csv"]
    )


def test_resume_updates_config_only_after_success(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run, symlinks=True)
    r = _train(world, "--out", run, "--resume", "--epochs", "2")
    assert r.code == 0, r.err
    doc = json.loads((run / "config.json").read_text())
    assert doc["resumed"] == [{"epochs": 2}] and doc["config"]["epochs"] == 2
    assert _listing(run) == sorted([MARKER, "best", "config.json", "last", "log.csv"])
    assert len((run / "log.csv").read_text().splitlines()) == 3


def test_model_create_replaces_only_a_checkpoint(tmp_path):
    out = tmp_path / "m"
    for seed in ("0", "1"):
        r = run_cli(*CREATE, out, "--classes", "2", "--seed", seed, "--overwrite", *TINY_OPTS)
        assert r.code == 0, r.err
    assert _listing(tmp_path) == ["m"]
    assert _listing(out) == ["config.json", "geoseg.json", "model.safetensors"]


def _modes(root: Path) -> set[tuple[str, int]]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out.add(("dir", stat.S_IMODE((Path(dirpath) / name).stat().st_mode)))
        for name in filenames:
            out.add(("file", stat.S_IMODE((Path(dirpath) / name).stat().st_mode)))
    return out


@pytest.mark.parametrize("mask,fmode,dmode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_get_the_umask_modes(world, tmp_path, mask, fmode, dmode):
    out = tmp_path / "out"
    old = os.umask(mask)
    try:
        out.mkdir(mode=dmode)
        r = run_cli(*CREATE, out / "m", "--classes", "2", *TINY_OPTS)
        assert r.code == 0, r.err
        r = _train(world, "--out", out / "run")
        assert r.code == 0, r.err
        adapt = ["adapt", world / "target.tif", "--model", world / "ckpt", "--method", "stats"]
        r = run_cli(*adapt, "--out", out / "adapted", "-q")
        assert r.code == 0, r.err
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "out")
    assert modes == {("file", fmode), ("dir", dmode)}, [oct(m) for _, m in modes]


# ------------------------------------------------------------------------------- FIFOs, bombs
def _fifo_world(tmp_path: Path, world: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(world / "data", data)
    return data


FIFO_CASES = [
    ("image", "images/part_001.png", "train"),
    ("mask", "masks/part_001.png", "train"),
    ("prediction", "preds/part_000.png", "evaluate"),
]


@pytest.mark.parametrize("name,file,command", FIFO_CASES, ids=[c[0] for c in FIFO_CASES])
def test_fifo_input_refused_not_hanging(world, tmp_path, name, file, command):
    """A FIFO would block the reader forever: refused before opening (in a real process)."""
    data = _fifo_world(tmp_path, world)
    (data / "preds").mkdir()
    if command == "train":
        args = [*TRAIN, "--out", tmp_path / "run", "--train", f"folder:{data}"]
        args = [str(a).replace("{root}", str(world)) for a in args]
    else:
        cfg = tmp_path / "ds.yaml"
        cfg.write_text(
            "label_mode: rgb\nignore_colours: ['#000000']\nclasses:\n"
            "  - {name: Sea, colour: [0, 0, 255]}\n  - {name: Sand, colour: [255, 255, 0]}\n"
            "  - {name: Town, colour: [255, 0, 0]}\n"
        )
        args = ["evaluate", "--dataset", f"folder:{data}", "--config", cfg, "--pred-dir"]
        args += [data / "preds"]
        from PIL import Image

        for stem in ("part_001", "part_002", "part_003"):
            Image.fromarray(np.zeros((48, 40), np.uint8)).save(data / "preds" / f"{stem}.png")
    (data / file).unlink(missing_ok=True)
    os.mkfifo(data / file)
    before = snapshot(tmp_path)
    result = run_subprocess(*args, timeout=60)
    assert_refused(result, before, snapshot(tmp_path), file.rsplit("/", 1)[-1], "FIFO")


def test_prediction_bomb_refused(tmp_path):
    """A PNG header declaring 20000 x 20000 pixels: one error naming the file and its size."""
    from geoseg.errors import RasterReadError
    from geoseg.io.images import read_label_png

    _bomb_png(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(RasterReadError, match="bomb.png declares 400000000 pixels"):
        read_label_png(tmp_path / "bomb.png")


# ------------------------------------------------------------------------------- run entries
def test_is_run_accepts_only_geoseg_temporaries(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "run", run, symlinks=True)
    shutil.copytree(run / "last", run / ".last.abc.tmp")  # a checkpoint being written
    (run / ".best.x.tmp.old").mkdir()
    shutil.copytree(run / "best", run / ".best.x.tmp.old" / "best")  # one being swapped out
    (run / ".log.csv.y.tmp").write_text("epoch\n")
    (run / ".config.json.z.tmp").mkdir()  # an empty temporary folder
    assert is_run(run)
    (run / ".config.json.z.tmp" / "precious.txt").write_text("keep\n")
    assert not is_run(run)
    (run / ".config.json.z.tmp" / "precious.txt").unlink()
    os.symlink(run / "best", run / ".best.w.tmp")
    assert not is_run(run)
    (run / ".best.w.tmp").unlink()
    (run / MARKER).unlink()
    assert not is_run(run) and is_run(run, require_marker=False)


def test_resume_of_a_run_without_marker_writes_it(world, tmp_path):
    """Runs written before the marker existed resume (their entries are checked)."""
    run = tmp_path / "run"
    shutil.copytree(world / "run", run, symlinks=True)
    (run / MARKER).unlink()
    r = _train(world, "--out", run, "--resume", "--epochs", "2")
    assert r.code == 0, r.err
    assert is_run(run)
