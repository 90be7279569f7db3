"""A refused option value names its flag on the command line and its option in a config file.

The library speaks of values (``block_size 0 is outside ...``) and tags each error with the
option it refused (``GeosegError.option``); the CLI's :class:`~geoseg.commands.options.Command`
turns it into click's ``Invalid value for '--block-size'`` (exit 2) when the value was given
as a flag, and prints it as is when it came from a ``--config`` file.
"""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import GeosegError
from tests.conftest import write_geotiff
from tests.hostile import assert_refused, run_cli, snapshot

TINY = ["--tile", "32", "--overlap", "8", "--block-size", "32", "--no-progress"]


CKPT_TILE = 32  # the conftest ckpt fixture's tile


@pytest.fixture
def scene(make_raster):
    return make_raster(height=64, width=64, name="scene.tif")


@pytest.fixture
def classmap(tmp_path):
    ids = np.arange(64, dtype=np.uint8).reshape(1, 8, 8) % 3
    return write_geotiff(tmp_path / "map.tif", ids, nodata=255)


def refused_as(root, flag, *args, words=()):
    """Exit 2 and one line ``Invalid value for 'FLAG'`` with ``words``; nothing changed."""
    before = snapshot(root)
    result = run_cli(*args)
    assert_refused(result, before, snapshot(root), f"Invalid value for '{flag}'", *words)
    assert result.code == 2, result.err
    return result


def test_predict_flags(tmp_path, scene, ckpt):
    out = tmp_path / "o.tif"
    run = ("predict", scene, out, "--model", ckpt, *TINY)
    refused_as(tmp_path, "--co", *run, "--co", "BLOCKXSIZE=64", words=["block_size 32"])
    refused_as(tmp_path, "--nodata", *run, "--nodata", "2", words=["nodata 2", "class id"])
    refused_as(tmp_path, "--bands", *run, "--bands", "1,2,5", words=["bands 5", "1..3"])
    refused_as(tmp_path, "--block-size", "predict", scene, out, "--model", ckpt,
               "--block-size", "0", words=["block_size 0"])  # fmt: skip


def test_predict_batch_name(tmp_path, scene, ckpt):
    (tmp_path / "out").mkdir()
    refused_as(tmp_path, "--name", "predict", scene, "--output-dir", tmp_path / "out",
               "--name", "{stem.nope}.tif", "--model", ckpt, *TINY,
               words=["unknown field"])  # fmt: skip


def test_vectorize_flags(tmp_path, classmap):
    out = tmp_path / "o.gpkg"
    refused_as(tmp_path, "--min-area", "vectorize", classmap, out, "--min-area", "5km2",
               words=["min_area '5km2'", "500m2"])  # fmt: skip
    refused_as(tmp_path, "--simplify", "vectorize", classmap, out, "--simplify", "-1",
               words=["simplify '-1'"])  # fmt: skip
    refused_as(tmp_path, "--block-size", "vectorize", classmap, out, "--block-size", "0",
               words=["block_size 0"])  # fmt: skip


def test_stats_flag(tmp_path, classmap):
    refused_as(tmp_path, "--block-size", "stats", classmap, "--block-size", "0",
               words=["block_size 0", "2048"])  # fmt: skip


def test_tiles_flag(tmp_path, scene):
    refused_as(tmp_path, "--bands", "tiles", scene, "--bands", "4", words=["bands 4", "1..3"])


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--method", "bogus", ["method 'bogus'", "stats, adabn"]),
        ("--fraction", "1.5", ["fraction 1.5", "(0, 1]"]),
        ("--windows", "100000000", ["windows 100000000", "pixels per band"]),
    ],
)
def test_adapt_flags(tmp_path, scene, ckpt, flag, value, words):
    refused_as(tmp_path, flag, "adapt", scene, "--model", ckpt, "--out", tmp_path / "new",
               "--method", "adabn", flag, value, words=words)  # fmt: skip
    assert not (tmp_path / "new").exists()


def test_a_config_file_value_names_the_option_not_the_flag(tmp_path, scene, ckpt):
    cfg = tmp_path / "predict.yaml"
    cfg.write_text("block_size: 0\n")
    before = snapshot(tmp_path)
    result = run_cli("predict", scene, tmp_path / "o.tif", "--model", ckpt, "--config", cfg)
    assert_refused(result, before, snapshot(tmp_path), "block_size 0")
    assert result.code == 2, result.err
    line = result.error_lines[0]
    assert "--block-size" not in line and "Invalid value" not in line, line


def _raised(call):
    with pytest.raises(GeosegError) as info:
        call()
    return info.value


def _library_cases():
    """(case, call that refuses a value, command that exposes it, expected option)."""
    from geoseg.core.blend import check_mode
    from geoseg.core.metrics import check_num_classes
    from geoseg.core.plan import check_nodata
    from geoseg.io.raster import band_values, check_bands
    from geoseg.io.writers import check_creation_options
    from geoseg.model.engine import resolve_device, resolve_precision, tta_transforms
    from geoseg.run import class_stats, scheduling, vector
    from geoseg.run.batch import output_name
    from geoseg.train import adapt

    return [
        ("min_area", lambda: vector.parse_min_area("5km2"), "vectorize", "min_area"),
        ("simplify", lambda: vector.parse_tolerance("-1"), "vectorize", "simplify"),
        ("vector block", lambda: vector.check_block_size(0), "vectorize", "block_size"),
        ("stats block", lambda: class_stats._check_block_size(0), "stats", "block_size"),
        ("workers", lambda: scheduling.check_workers(0), "predict", "workers"),
        ("co", lambda: check_creation_options({"FOO": "1"}, 2048), "predict", "creation_options"),
        ("nodata", lambda: check_nodata(2, 3), "predict", "nodata"),
        ("bands", lambda: check_bands([5], 3), "tiles", "bands"),
        ("scale", lambda: band_values([1.0, 2.0], 3, "scale", 1.0), "predict", "scale"),
        ("name", lambda: output_name("a.tif", "{nope}"), "predict", "name_pattern"),
        ("blend", lambda: check_mode("sharp"), "predict", "blend"),
        ("tta", lambda: tta_transforms("d8"), "predict", "tta"),
        ("device", lambda: resolve_device("tpu"), "predict", "device"),
        ("precision", lambda: resolve_precision("fp8", "cpu"), "predict", "precision"),
        ("num_classes", lambda: check_num_classes(0), "evaluate", "num_classes"),
        ("method", lambda: adapt.parse_methods("bogus"), "adapt", "method"),
        ("fraction", lambda: adapt.AdaptConfig(("stats",), fraction=2.0), "adapt", "fraction"),
        ("windows", lambda: adapt.AdaptConfig(("stats",), windows=10**8), "adapt", "windows"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in _library_cases()])
def test_library_errors_name_a_parameter_of_the_command(case):
    import importlib

    import cli

    _, call, command, option = next(c for c in _library_cases() if c[0] == case)
    exc = _raised(call)
    assert exc.option == option
    named = {"name_pattern": "pattern"}.get(option, option)  # output_name's own parameter
    assert str(exc).startswith(f"{named} "), str(exc)
    assert "--" not in str(exc).split(";")[0], str(exc)  # the value is named, not the flag
    module, attr = cli.COMMANDS[command].split(":")
    params = {p.name for p in getattr(importlib.import_module(module), attr).params}
    assert option in params, f"{command} has no parameter {option!r}"
