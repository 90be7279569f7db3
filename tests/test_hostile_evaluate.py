"""Hostile inputs for ``evaluate``, ``tiles`` and ``quicklook``: refused in one line, nothing lost.

Every refusal is checked with :func:`hostile.assert_refused`: a non-zero exit, exactly one error
line naming the offending value, no traceback, and every file under the test folder (inputs
included, by mode and hash) exactly as it was.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_geotiff  # noqa: E402
from hostile import assert_refused, run_cli, run_subprocess, snapshot  # noqa: E402

CONFIG = """label_mode: rgb
classes:
  - {name: a, colour: "#FF0000"}
  - {name: b, colour: "#00FF00"}
ignore_colours: ["#000000"]
"""


@pytest.fixture
def ws(tmp_path):
    """A workspace: a prediction/label pair, an image, a class map, a dataset and a config."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (40, 50)).astype(np.uint8)
    pred = np.where(rng.random(label.shape) < 0.7, label, 0).astype(np.uint8)
    w = {
        "pred": write_geotiff(tmp_path / "pred.tif", pred),
        "label": write_geotiff(tmp_path / "label.tif", label),
        "image": write_geotiff(tmp_path / "image.tif", rng.integers(0, 255, (3, 40, 50), "u1")),
        "cls": write_geotiff(tmp_path / "cls.tif", label, nodata=255),
    }
    from PIL import Image

    root = tmp_path / "ds"
    for sub in ("images", "masks", "preds"):
        (root / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.png")
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[:4, :, 0] = 255
    Image.fromarray(mask).save(root / "masks" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "preds" / "a.png")
    w["ds"], w["preds"] = root, root / "preds"
    w["config"] = tmp_path / "ds.yaml"
    w["config"].write_text(CONFIG)
    w["root"] = tmp_path
    return w


def refused(root: Path, args: list, *words: str) -> None:
    """Run ``geoseg ARGS`` and check that it is refused without touching anything."""
    before = snapshot(root)
    result = run_cli(*args)
    assert_refused(result, before, snapshot(root), *words)


def pair_args(w, *extra):
    return ["evaluate", w["pred"], w["label"], "--num-classes", "3", *extra]


def dataset_args(w, *extra):
    return ["evaluate", "--dataset", f"folder:{w['ds']}", "--config", w["config"], *extra]


# --------------------------------------------------------------------------------------------
# 1. outputs never overwrite inputs (with or without --overwrite), nor each other
# --------------------------------------------------------------------------------------------

PAIR_OUTPUTS = ["--json", "--csv", "--plot", "--error-map"]


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("victim", ["pred", "label"])
@pytest.mark.parametrize("option", PAIR_OUTPUTS)
def test_evaluate_output_is_an_input(ws, option, victim, overwrite):
    extra = ["--overwrite"] if overwrite else []
    refused(ws["root"], pair_args(ws, option, ws[victim], *extra), option, "input")


@pytest.mark.parametrize(
    "option, victim",
    [
        ("--json", lambda w: w["config"]),
        ("--csv", lambda w: w["ds"] / "masks" / "a.png"),
        ("--plot", lambda w: w["ds"] / "images" / "a.png"),
        ("--json", lambda w: w["preds"] / "a.png"),
        ("--json", lambda w: w["ds"]),
    ],
    ids=["config", "dataset-mask", "dataset-image", "pred-dir-file", "dataset-root"],
)
def test_evaluate_dataset_output_is_an_input(ws, option, victim):
    args = dataset_args(ws, "--pred-dir", ws["preds"], option, victim(ws), "--overwrite")
    refused(ws["root"], args, "input")


def test_evaluate_output_is_the_model(ws, tmp_path):
    ckpt = tmp_path / "m.geoseg"
    ckpt.mkdir()
    (ckpt / "weights.bin").write_bytes(b"w")
    args = dataset_args(ws, "--model", ckpt, "--json", ckpt / "weights.bin", "--overwrite")
    refused(ws["root"], args, "input", "weights.bin")


@pytest.mark.parametrize(
    "first, second", [("--json", "--csv"), ("--csv", "--plot"), ("--json", "--error-map")]
)
def test_evaluate_two_outputs_same_path(ws, first, second):
    out = ws["root"] / "same.out"
    refused(ws["root"], pair_args(ws, first, out, second, out), "same file")


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize(
    "command",
    ["json", "csv", "plot", "geojson", "quicklook", "predict-probabilities"],
)
def test_an_input_sidecar_is_never_written(ws, command, overwrite):
    """GDAL reads ``X.aux.xml`` as part of raster X: no output may replace it."""
    side = lambda key: Path(f"{ws[key]}.aux.xml")  # noqa: E731
    if command in ("json", "csv", "plot"):
        args = pair_args(ws, f"--{command}", side("pred"))
    elif command == "geojson":
        args = ["tiles", ws["image"], "--tile", "16", "--overlap", "4", "--geojson", side("image")]
    elif command == "quicklook":
        args = ["quicklook", ws["image"], ws["cls"], side("cls")]
    else:
        from helpers import make_checkpoint

        ckpt = make_checkpoint(ws["root"] / "m.geoseg", tile=32)
        probs = ws["root"] / "x_probabilities.tif"  # an input whose name is o's probabilities
        probs.write_bytes(Path(ws["image"]).read_bytes())
        args = ["predict", probs, ws["root"] / "x.tif", "--model", ckpt, "--probabilities"]
    refused(ws["root"], [*args, *overwrite], "input")


def test_evaluate_report_onto_the_error_maps_sidecar(ws):
    err = ws["root"] / "err.tif"
    args = pair_args(ws, "--error-map", err, "--json", f"{err}.aux.xml")
    refused(ws["root"], args, "same file")
    refused(ws["root"], [*args, "--overwrite"], "same file")


def test_evaluate_outputs_checked_before_work(ws):
    # the first output is fine, the second already exists: nothing at all is written
    (ws["root"] / "old.csv").write_text("keep")
    args = pair_args(ws, "--json", ws["root"] / "new.json", "--csv", ws["root"] / "old.csv")
    refused(ws["root"], args, "--overwrite")


@pytest.mark.parametrize("option", PAIR_OUTPUTS)
def test_evaluate_output_is_a_symlink(ws, option):
    victim = ws["root"] / "victim.txt"
    victim.write_text("precious")
    link = ws["root"] / ("link.tif" if option == "--error-map" else "link.out")
    link.symlink_to(victim)
    refused(ws["root"], pair_args(ws, option, link, "--overwrite"), "symbolic link")


@pytest.mark.parametrize("overwrite", [False, True])
def test_tiles_geojson_is_the_input(ws, overwrite):
    extra = ["--overwrite"] if overwrite else []
    refused(ws["root"], ["tiles", ws["image"], "--geojson", ws["image"], *extra], "input")


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("victim", ["image", "cls"])
def test_quicklook_out_is_an_input(ws, victim, overwrite):
    extra = ["--overwrite"] if overwrite else []
    args = ["quicklook", ws["image"], ws["cls"], ws[victim], *extra]
    refused(ws["root"], args, "input")


def test_quicklook_out_inside_the_model(ws, tmp_path):
    ckpt = tmp_path / "m.geoseg"
    ckpt.mkdir()
    (ckpt / "geoseg.json").write_text("{}")
    args = ["quicklook", ws["image"], ws["cls"], ckpt / "geoseg.json", "--model", ckpt]
    refused(ws["root"], [*args, "--overwrite"], "input")


def test_quicklook_out_is_a_symlink(ws):
    victim = ws["root"] / "victim.png"
    victim.write_bytes(b"precious")
    (ws["root"] / "ql.png").symlink_to(victim)
    args = ["quicklook", ws["image"], ws["cls"], ws["root"] / "ql.png", "--overwrite"]
    refused(ws["root"], args, "symbolic link")


# --------------------------------------------------------------------------------------------
# 2. temporaries: a link planted at the old fixed name `.NAME.tmp` redirects nothing
# --------------------------------------------------------------------------------------------


def plant(root: Path, names: list[str]) -> Path:
    victim = root / "victim.txt"
    victim.write_text("precious")
    for name in names:
        (root / f".{name}.tmp").symlink_to(victim)
    return victim


def test_evaluate_reports_ignore_planted_temp_links(ws):
    root = ws["root"]
    victim = plant(root, ["r.json", "r.csv", "r.png"])
    args = ["--json", root / "r.json", "--csv", root / "r.csv", "--plot", root / "r.png"]
    result = run_cli(*pair_args(ws, *args))
    assert result.code == 0, result.err
    assert victim.read_text() == "precious"
    assert json.loads((root / "r.json").read_text())["summary"]["pixels"] == 40 * 50
    assert (root / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_tiles_geojson_ignores_planted_temp_link(ws):
    victim = plant(ws["root"], ["w.geojson"])
    result = run_cli("tiles", ws["image"], "--tile", "16", "--overlap", "4", "--geojson",
                     ws["root"] / "w.geojson")  # fmt: skip
    assert result.code == 0, result.err
    assert victim.read_text() == "precious"
    assert json.loads((ws["root"] / "w.geojson").read_text())["type"] == "FeatureCollection"


def test_tiles_geojson_symlink_refused(ws):
    victim = ws["root"] / "victim.txt"
    victim.write_text("precious")
    (ws["root"] / "w.geojson").symlink_to(victim)
    args = ["tiles", ws["image"], "--geojson", ws["root"] / "w.geojson", "--overwrite"]
    refused(ws["root"], args, "symbolic link")


# --------------------------------------------------------------------------------------------
# 3. modes follow the umask
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=[(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def umask(request):
    old = os.umask(request.param[0])
    yield request.param[1]
    os.umask(old)


def test_output_modes_follow_umask(ws, umask):
    root = ws["root"]
    outs = {"json": root / "r.json", "csv": root / "r.csv", "plot": root / "r.png"}
    args = [a for k, v in outs.items() for a in (f"--{k}", v)]
    assert run_cli(*pair_args(ws, *args)).code == 0
    ql, gj = root / "ql.png", root / "w.geojson"
    assert run_cli("quicklook", ws["image"], ws["cls"], ql).code == 0
    tiles = ["tiles", ws["image"], "--tile", "16", "--overlap", "4", "--geojson", gj]
    assert run_cli(*tiles).code == 0
    for path in [*outs.values(), ql, gj]:
        assert stat.S_IMODE(path.stat().st_mode) == umask, path


# --------------------------------------------------------------------------------------------
# 4. evaluate: values that would silently give garbage
# --------------------------------------------------------------------------------------------


def _write(root: Path, name: str, data: np.ndarray) -> Path:
    return write_geotiff(root / name, data)


BAD_RASTERS = {
    "float": (lambda: np.full((40, 50), 2.9, np.float32), "float32", "gdal_translate -ot Byte"),
    "float-integral": (lambda: np.full((40, 50), 2.0, np.float64), "float64", "-ot Byte"),
    "complex": (lambda: np.full((40, 50), 1 + 1j, np.complex64), "complex64", "-ot"),
    "multiband": (lambda: np.zeros((3, 40, 50), np.uint8), "3 bands", "gdal_translate -b"),
}


@pytest.mark.parametrize("role", ["pred", "label"])
@pytest.mark.parametrize("kind", list(BAD_RASTERS))
def test_evaluate_refuses_unscorable_rasters(ws, kind, role):
    make, *words = BAD_RASTERS[kind]
    bad = _write(ws["root"], f"bad_{kind}.tif", make())
    pred, label = (bad, ws["label"]) if role == "pred" else (ws["pred"], bad)
    refused(ws["root"], ["evaluate", pred, label, "--num-classes", "3"], *words)


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--num-classes", "-3", ["--num-classes", "-3"]),
        ("--num-classes", "0", ["--num-classes", "0"]),
        ("--num-classes", "1000000", ["--num-classes", "1000000", "4096"]),
        ("--num-classes", "many", ["--num-classes", "many"]),
        ("--block-size", "0", ["--block-size", "0"]),
        ("--block-size", "-64", ["--block-size", "-64"]),
        ("--workers", "0", ["--workers", "0"]),
        ("--workers", "-2", ["--workers", "-2"]),
    ],
)
def test_evaluate_refuses_bad_numbers(ws, option, value, words):
    args = ["evaluate", ws["pred"], ws["label"], option, value]
    if option != "--num-classes":
        args += ["--num-classes", "3"]
    refused(ws["root"], [*args, "--json", ws["root"] / "r.json"], *words)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--tile", "0"], ["--tile", "0"]),
        (["--batch-size", "-1"], ["--batch-size", "-1"]),
        (["--tile", "64", "--overlap", "64"], ["--overlap", "64"]),
        (["--overlap", "-1"], ["--overlap", "-1"]),
    ],
)
def test_evaluate_refuses_bad_model_numbers(ws, extra, words):
    refused(ws["root"], dataset_args(ws, "--pred-dir", ws["preds"], *extra), *words)


def test_prediction_values_beyond_num_classes(ws):
    refused(ws["root"], ["evaluate", ws["pred"], ws["label"], "--num-classes", "2"], "2 (")


def test_truncated_and_odd_prediction_files(ws):
    root = ws["root"]
    data = ws["pred"].read_bytes()
    trunc = root / "trunc.tif"
    big = write_geotiff(root / "big.tif", np.ones((400, 400), np.uint16), compress="deflate")
    raw = big.read_bytes()
    trunc.write_bytes(raw[: len(raw) // 2])
    label = write_geotiff(root / "big_label.tif", np.ones((400, 400), np.uint8))
    refused(root, ["evaluate", trunc, label, "--num-classes", "3"], "trunc.tif")
    (root / "junk.tif").write_bytes(data[:100])
    refused(root, ["evaluate", root / "junk.tif", ws["label"], "--num-classes", "3"], "junk.tif")
    (root / "text.tif").write_text("not a raster\n")
    refused(root, ["evaluate", ws["pred"], root / "text.tif", "--num-classes", "3"], "text.tif")
    refused(root, ["evaluate", ws["pred"], ws["ds"], "--num-classes", "3"], "directory")
    refused(root, ["evaluate", ws["pred"], root / "nope.tif", "--num-classes", "3"], "nope.tif")


def _config(ws, text: str) -> Path:
    p = ws["root"] / "bad.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, words",
    [
        ('classes:\n  - {name: a, colour: [300, 0, 0]}\n', ["300", "0..255"]),
        ('classes:\n  - {name: a, colour: [-1, 0, 0]}\n', ["-1", "0..255"]),
        ('classes:\n  - {name: a, colour: [1.5, 0, 0]}\n', ["1.5", "integer"]),
        ('classes:\n  - {name: a, colour: "#GG0000"}\n', ["#GG0000"]),
        ('classes:\n  - {name: a}\n', ["classes[0]", "colour"]),
        ('classes:\n  - {name: a, colour: "#FF0000"}\nignore_index: x\n', ["ignore_index", "x"]),
        ('classes:\n  - {name: a, colour: "#FF0000"}\nignore_colours: "#000000"\n',
         ["ignore_colours"]),
        ('classes: 3\n', ["classes"]),
    ],
    ids=["over255", "negative", "float", "badhex", "nocolour", "ignore-index", "ignore-str",
         "classes-int"],
)  # fmt: skip
def test_dataset_config_refused(ws, text, words):
    args = ["evaluate", "--dataset", f"folder:{ws['ds']}", "--config", _config(ws, text)]
    refused(ws["root"], [*args, "--pred-dir", ws["preds"]], *words)


def test_dataset_hostile_layouts(ws):
    root = ws["root"]
    refused(root, ["evaluate", "--dataset", f"nosuch:{ws['ds']}", "--pred-dir", ws["preds"]],
            "nosuch", "ade20k")  # fmt: skip
    refused(root, dataset_args(ws, "--pred-dir", root / "missing"), "--pred-dir", "missing")
    refused(root, dataset_args(ws), "--model", "--pred-dir")
    refused(root, dataset_args(ws, "--pred-dir", ws["preds"], "--error-map", root / "e.tif"),
            "--error-map")  # fmt: skip
    refused(root, [*dataset_args(ws, "--pred-dir", ws["preds"]), ws["pred"]], "either")
    refused(root, dataset_args(ws, "--model", root / "nomodel"), "nomodel")


def test_dataset_label_colour_not_in_palette(ws):
    from PIL import Image

    mask = np.zeros((8, 8, 3), np.uint8)
    mask[0, 0] = (1, 2, 3)
    Image.fromarray(mask).save(ws["ds"] / "masks" / "a.png")
    refused(ws["root"], dataset_args(ws, "--pred-dir", ws["preds"]), "#010203", "palette")


def test_dataset_float_and_multichannel_predictions(ws):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ws["preds"] / "a.png")
    refused(ws["root"], dataset_args(ws, "--pred-dir", ws["preds"]), "a.png", "channels")
    (ws["preds"] / "a.png").unlink()
    Image.fromarray(np.full((8, 8), 1.5, np.float32)).save(ws["preds"] / "a.tif")
    refused(ws["root"], dataset_args(ws, "--pred-dir", ws["preds"]), "a.tif", "float32")


def test_rasters_dataset_float_label_and_bad_num_classes(ws):
    root = ws["root"]
    write_geotiff(root / "s_image.tif", np.zeros((3, 8, 8), np.uint8))
    write_geotiff(root / "s_label.tif", np.full((8, 8), 0.5, np.float32))
    cfg = _config(ws, "num_classes: 3\n")
    spec = f"rasters:{root}/s_image.tif"
    pd = root / "rpreds"
    pd.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pd / "s_image.png")
    refused(root, ["evaluate", "--dataset", spec, "--config", cfg, "--pred-dir", pd], "float32")
    cfg.write_text("num_classes: 100000000\n")
    refused(root, ["evaluate", "--dataset", spec, "--config", cfg, "--pred-dir", pd],
            "num_classes", "100000000")  # fmt: skip


def test_label_dtype_refused_by_metrics_api():
    from geoseg.core.metrics import confusion_matrix
    from geoseg.errors import ConfigError, LabelError

    with pytest.raises(LabelError, match="float64"):
        confusion_matrix(np.array([2.9]), np.array([2]), 3)
    with pytest.raises(ConfigError, match="1000000"):
        confusion_matrix(np.array([1]), np.array([1]), 1_000_000)


# --------------------------------------------------------------------------------------------
# 5. quicklook
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [("--max-size", "0"), ("--max-size", "-5"), ("--dpi", "0"), ("--dpi", "-100"),
     ("--dpi", "1000000"), ("--max-size", "1000000")],
)  # fmt: skip
def test_quicklook_bad_numbers(ws, option, value):
    args = ["quicklook", ws["image"], ws["cls"], ws["root"] / "ql.png", option, value]
    refused(ws["root"], args, option, value)


@pytest.mark.parametrize(
    "kind, make, words",
    [
        ("uint32", lambda: np.full((40, 50), 2_000_000_000, np.uint32), ["uint32", "UInt16"]),
        ("float", lambda: np.full((40, 50), 1.5, np.float32), ["float32"]),
        ("complex", lambda: np.full((40, 50), 1j, np.complex64), ["complex64"]),
        ("multiband", lambda: np.zeros((2, 40, 50), np.uint8), ["2 bands"]),
        ("mismatch", lambda: np.zeros((20, 20), np.uint8), ["does not match"]),
    ],
)
def test_quicklook_bad_class_maps(ws, kind, make, words):
    cls = _write(ws["root"], f"cls_{kind}.tif", make())
    refused(ws["root"], ["quicklook", ws["image"], cls, ws["root"] / "ql.png"], *words)


def test_quicklook_bad_files(ws):
    root = ws["root"]
    (root / "notes.txt").write_text("hello\n")
    out = root / "ql.png"
    refused(root, ["quicklook", root / "notes.txt", ws["cls"], out], "notes.txt")
    refused(root, ["quicklook", ws["image"], root / "notes.txt", out], "notes.txt")
    refused(root, ["quicklook", ws["image"], ws["ds"], out], "directory")
    refused(root, ["quicklook", ws["image"], root / "none.tif", out], "none.tif")
    refused(root, ["quicklook", ws["image"], ws["cls"], root / "nodir" / "ql.png"], "nodir")
    cplx = _write(root, "cplx.tif", np.ones((40, 50), np.complex64))
    refused(root, ["quicklook", cplx, ws["cls"], out], "complex64")


def test_quicklook_huge_class_id_is_cheap():
    from geoseg.commands.quicklook import colourize

    ids = np.array([[0, 2_000_000_000], [1, -7]], np.int64)
    rgba = colourize(ids, [(255, 0, 0), (0, 255, 0)], nodata=None)
    assert rgba.shape == (2, 2, 4) and rgba[0, 1, 3] == 0 and rgba[1, 1, 3] == 0
    assert rgba[1, 0].tolist() == [0, 1, 0, 1]


def test_quicklook_many_ids_bounded_legend(ws):
    ids = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30
    cls = _write(ws["root"], "wide.tif", ids)
    result = run_cli("quicklook", ws["image"], cls, ws["root"] / "wide.png")
    assert result.code == 0, result.err


def test_fifo_inputs_never_hang(ws):
    root = ws["root"]
    fifo = root / "pipe.tif"
    os.mkfifo(fifo)
    out = root / "ql.png"
    cases = [
        ["quicklook", ws["image"], fifo, out],
        ["quicklook", fifo, ws["cls"], out],
        ["evaluate", fifo, ws["label"], "--num-classes", "3"],
        ["evaluate", ws["pred"], fifo, "--num-classes", "3"],
        ["tiles", fifo],
    ]
    for args in cases:
        before = snapshot(root)
        result = run_subprocess(*args, timeout=60)
        assert_refused(result, before, snapshot(root), "pipe.tif", "regular file")


# --------------------------------------------------------------------------------------------
# 6. tiles
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--tile", "0"], ["--tile 0"]),
        (["--tile", "-16"], ["--tile -16"]),
        (["--tile", "100000"], ["--tile", "100000", "GiB"]),
        (["--tile", "64", "--overlap", "64"], ["--overlap 64"]),
        (["--tile", "64", "--overlap", "80"], ["--overlap 80"]),
        (["--overlap", "-1"], ["--overlap -1"]),
        (["--bands", "0"], ["--bands", "0"]),
        (["--bands", "9"], ["9"]),
        (["--bands", "x"], ["--bands", "x"]),
        (["--geojson", "{root}/missing/w.geojson"], ["missing", "does not exist"]),
    ],
)
def test_tiles_bad_options(ws, extra, words):
    extra = [e.format(root=ws["root"]) for e in extra]
    refused(ws["root"], ["tiles", ws["image"], *extra], *words)


def test_tiles_larger_than_raster_is_one_window(ws):
    result = run_cli("tiles", ws["image"], "--tile", "4096", "--overlap", "0")
    assert result.code == 0, result.err
    assert "windows      1" in result.out


def test_tiles_geojson_exists_without_overwrite(ws):
    (ws["root"] / "w.geojson").write_text("{}")
    args = ["tiles", ws["image"], "--geojson", ws["root"] / "w.geojson"]
    refused(ws["root"], args, "--overwrite")


def test_shifted_share_is_pure_and_bounded():
    from geoseg.core.metrics import shifted_share

    cm = np.array([[0, 9, 0], [0, 0, 8], [1, 0, 0]])
    assert shifted_share(cm) == 17 / 18
    assert shifted_share(np.eye(3, dtype=np.int64)) == 0.0
    assert shifted_share(np.zeros((3, 4), np.int64)) == 0.0


@pytest.mark.integration
def test_ade20k_predictions_in_annotation_encoding_are_refused(shared_data, tmp_path):
    """ADE20K annotation ids (1..150) as predictions: refused, not a silent mIoU of 0."""
    root = shared_data / "ade20k-sample" / "ADEChallengeData2016"
    annotations = root / "annotations" / "validation"
    before = snapshot(tmp_path)
    result = run_cli("evaluate", "--dataset", f"ade20k:{root}", "--pred-dir", annotations,
                     "--no-progress", "--json", tmp_path / "m.json")
    assert_refused(result, before, snapshot(tmp_path), "shifted by one", "0..149")
