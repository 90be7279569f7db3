"""``geoseg predict --vector`` and ``--stats``: polygons and areas of the class map just made."""

from __future__ import annotations

import numpy as np
import pyogrio.raw
import pytest
import shapely
from hostile import assert_refused, run_cli, snapshot

OPTS = ["--tile", "32", "--overlap", "8", "--no-progress"]


CKPT_TILE = 32  # the conftest ckpt fixture's tile


def test_predict_writes_the_polygons_and_areas_of_its_class_map(tmp_path, make_raster, ckpt):
    src = make_raster(height=80, width=72, name="scene.tif")
    out, gpkg = tmp_path / "o.tif", tmp_path / "o.gpkg"
    res = run_cli("predict", src, out, "--model", ckpt, "--vector", gpkg, "--stats", *OPTS)
    assert res.code == 0, res.err
    assert "polygons" in res.out and "total (valid)" in res.out and "EPSG:32618" in res.out
    # the same polygons as `geoseg vectorize` of the class map afterwards
    again = tmp_path / "again.gpkg"
    assert run_cli("vectorize", out, again, "--no-progress").code == 0
    _, _, geoms, fields = pyogrio.raw.read(gpkg)
    _, _, geoms2, fields2 = pyogrio.raw.read(again)
    assert len(geoms) == len(geoms2) > 0
    assert np.array_equal(fields[0], fields2[0])  # class ids, in the same order
    a, b = shapely.from_wkb(geoms), shapely.from_wkb(geoms2)
    assert all(shapely.equals(x, y) for x, y in zip(a, b, strict=True))
    # 10 m pixels: every valid pixel is inside exactly one polygon
    assert shapely.area(a).sum() == pytest.approx(80 * 72 * 100)


def test_vector_target_is_checked_before_any_work(tmp_path, make_raster, ckpt):
    src = make_raster(height=40, width=40, name="scene.tif")
    foreign = tmp_path / "mine.gpkg"
    foreign.write_bytes(b"not geoseg's")
    cases = [
        (src, ["input"]),  # the input raster itself
        (tmp_path / "o.tif", ["OUT"]),  # the class map predict is about to write
        (foreign, ["--overwrite"]),  # exists, without --overwrite
        (tmp_path / "o.shp", ["shp"]),  # a format vectorize does not write
    ]
    for target, words in cases:
        before = snapshot(tmp_path)
        res = run_cli("predict", src, tmp_path / "o.tif", "--model", ckpt, "--vector", target)
        assert_refused(res, before, snapshot(tmp_path), *words)


def test_a_failed_vector_leaves_nothing_behind(tmp_path, make_raster, ckpt):
    """GeoJSON needs a CRS with an EPSG code: only known once the map exists; then undone."""
    from conftest import write_geotiff

    src = write_geotiff(tmp_path / "local.tif", np.full((3, 40, 40), 90, np.uint8), crs=None)
    before = snapshot(tmp_path)
    res = run_cli("predict", src, tmp_path / "o.tif", "--model", ckpt, "--vector",
                  tmp_path / "o.geojson", *OPTS)  # fmt: skip
    assert_refused(res, before, snapshot(tmp_path), "GeoJSON")


def test_batch_takes_stats_but_not_one_vector_file(tmp_path, make_raster, ckpt):
    a = make_raster(height=40, width=40, name="a.tif")
    out = tmp_path / "out"
    res = run_cli("predict", a, "--output-dir", out, "--model", ckpt, "--stats", *OPTS)
    assert res.code == 0, res.err
    assert "total (valid)" in res.out
    before = snapshot(tmp_path)
    res = run_cli("predict", a, "--output-dir", out, "--model", ckpt, "--vector", "v.gpkg")
    assert res.code != 0 and "geoseg vectorize" in res.err
    assert snapshot(tmp_path) == before
