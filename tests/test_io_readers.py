"""Raster readers: dtypes, band selection, masks, edge padding, Zarr, pickling, bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.errors import InputError, RasterReadError
from geoseg.io.raster import (
    ArraySource,
    ScaledSource,
    clip_window,
    open_raster,
    reflect_pad,
    row_runs,
)
from tests.conftest import write_geotiff
from tilers.grid import Grid, Window


def ramp(bands: int, height: int, width: int, dtype: str) -> np.ndarray:
    """Distinct values per band/pixel so any misplaced read shows."""
    base = np.arange(height * width).reshape(height, width) % 200
    return np.stack([base + 10 * b + 1 for b in range(bands)]).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_dtypes_read_raw_values_as_float32(tmp_path, dtype):
    data = ramp(3, 40, 30, dtype)
    if dtype == "int16":
        data = data - 150  # negative values survive
    path = write_geotiff(tmp_path / "in.tif", data)
    with open_raster(path) as src:
        info = src.info
        assert (info.height, info.width, info.count, info.dtype) == (40, 30, 3, dtype)
        assert info.kind == "gdal" and info.georeferenced
        assert info.transform == tuple(from_origin(500000.0, 4200000.0, 10.0, 10.0))[:6]
        assert "UTM zone 18N" in info.crs_wkt
        out, valid = src.read(5, 7, 16, 12)
    assert out.dtype == np.float32 and out.shape == (3, 16, 12)
    np.testing.assert_array_equal(out, data[:, 5:21, 7:19].astype(np.float32))
    assert valid.dtype == bool and valid.all()


def test_float32_nan_nodata_is_invalid_and_zeroed(tmp_path):
    data = ramp(2, 20, 20, "float32")
    data[0, 3, 4] = np.nan
    data[1, 10, 11] = np.nan
    path = write_geotiff(tmp_path / "nan.tif", data, nodata=float("nan"))
    src = open_raster(path)
    assert np.isnan(src.info.nodata)
    out, valid = src.read(0, 0, 20, 20)
    assert not valid[3, 4] and not valid[10, 11]
    assert valid.sum() == 400 - 2
    assert np.isfinite(out).all() and out[0, 3, 4] == 0


def test_band_selection_order_and_info(tmp_path):
    data = ramp(4, 10, 12, "uint16")
    src = open_raster(write_geotiff(tmp_path / "b.tif", data), bands=[4, 2])
    assert src.info.count == 2 and src.info.band_indexes == (4, 2)
    out, _ = src.read(0, 0, 10, 12)
    np.testing.assert_array_equal(out, data[[3, 1]].astype(np.float32))


def test_nodata_only_where_every_selected_band_is_nodata(tmp_path):
    # GDAL's dataset-mask rule: a dark pixel with one band at 0 is still data.
    data = ramp(3, 10, 10, "uint8")
    data[1, 2, 3] = 0  # band 2 only: still data
    data[:, 5, 5] = 0  # every band: nodata
    data[:2, 7, 7] = 0  # bands 1 and 2 only
    path = write_geotiff(tmp_path / "nd.tif", data, nodata=0)
    _, valid = open_raster(path).read(0, 0, 10, 10)
    assert valid[2, 3] and not valid[5, 5] and valid[7, 7] and valid.sum() == 99
    _, valid12 = open_raster(path, bands=[1, 2]).read(0, 0, 10, 10)
    assert valid12[2, 3] and not valid12[5, 5] and not valid12[7, 7]


def test_gdal_dataset_mask_is_honoured(tmp_path):
    data = ramp(3, 16, 16, "uint8")
    path = tmp_path / "masked.tif"
    mask = np.full((16, 16), 255, np.uint8)
    mask[:4, :] = 0
    prof = dict(
        driver="GTiff",
        height=16,
        width=16,
        count=3,
        dtype="uint8",
        crs="EPSG:4326",
        transform=from_origin(0, 16, 1, 1),
    )
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        dst.write_mask(mask)
    out, valid = open_raster(path).read(0, 0, 16, 16)
    assert not valid[:4].any() and valid[4:].all()
    np.testing.assert_array_equal(out, data.astype(np.float32))


def test_window_past_the_edge_is_reflect_padded_and_invalid(tmp_path):
    data = ramp(2, 10, 7, "int16")
    src = open_raster(write_geotiff(tmp_path / "small.tif", data))
    out, valid = src.read(0, 0, 16, 16)
    assert out.shape == (2, 16, 16) and valid.shape == (16, 16)
    assert valid[:10, :7].all() and not valid[10:].any() and not valid[:, 7:].any()
    expect = np.pad(data.astype(np.float32), [(0, 0), (0, 6), (0, 9)], mode="reflect")
    np.testing.assert_array_equal(out, expect)
    # a window hanging off the top-left side too
    out, valid = src.read(-3, -2, 6, 6)
    np.testing.assert_array_equal(out[:, 3:, 2:], data[:, :3, :4].astype(np.float32))
    assert out[0, 2, 2] == data[0, 1, 0]  # reflected row 1, column 0
    assert not valid[:3].any() and valid[3:, 2:].all()


def test_one_pixel_axis_falls_back_to_edge_padding():
    src = ArraySource(np.arange(5, dtype=np.uint8).reshape(1, 1, 5))
    out, valid = src.read(0, 0, 4, 8)
    assert out.shape == (1, 4, 8)
    np.testing.assert_array_equal(out[0, 3, :5], np.arange(5))
    np.testing.assert_array_equal(out[0, 0, 5:], [3, 2, 1])
    assert valid.sum() == 5


def test_pure_helpers():
    c = clip_window(-2, 5, 10, 10, (6, 12))
    assert (c.row0, c.row1, c.col0, c.col1) == (0, 6, 5, 12)
    assert c.pad_rows == (2, 2) and c.pad_cols == (0, 3)
    assert clip_window(20, 20, 4, 4, (6, 6)).empty
    assert reflect_pad(np.arange(3)[None], (0, 0), (0, 4)).tolist() == [[0, 1, 2, 1, 0, 1, 2]]


def test_window_outside_the_raster_is_all_invalid():
    out, valid = ArraySource(np.ones((2, 4, 4))).read(10, 10, 3, 3)
    assert out.shape == (2, 3, 3) and not valid.any()


def test_array_source_valid_mask():
    image = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    mask = np.ones((6, 6), bool)
    mask[0, 0] = False
    out, valid = ArraySource(image, mask).read(0, 0, 6, 6)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(valid, mask)
    with pytest.raises(InputError, match="valid mask has shape"):
        ArraySource(image, np.ones((5, 6), bool))


def write_zarr(path, data, nodata=None, crs="EPSG:32618"):
    import rioxarray  # noqa: F401
    import xarray as xr

    _, h, w = data.shape
    transform = from_origin(600000.0, 5000000.0, 20.0, 20.0)
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": np.arange(1, data.shape[0] + 1),
            "y": 5000000.0 - 20.0 * (np.arange(h) + 0.5),
            "x": 600000.0 + 20.0 * (np.arange(w) + 0.5),
        },
        name="image",
    )
    if crs:
        da = da.rio.write_crs(crs).rio.write_transform(transform)
    if nodata is not None:
        da = da.rio.write_nodata(nodata)
    da.to_dataset().to_zarr(path, zarr_format=3, mode="w")
    return path, transform


def test_zarr_input_round_trip(tmp_path):
    data = ramp(3, 30, 25, "uint16")
    data[:, 4, 6] = 9999
    path, transform = write_zarr(tmp_path / "in.zarr", data, nodata=9999)
    src = open_raster(path, bands=[3, 1])
    info = src.info
    assert info.kind == "zarr" and (info.height, info.width, info.count) == (30, 25, 2)
    assert info.dtype == "uint16" and info.nodata == 9999
    assert info.transform == tuple(transform)[:6]
    assert rasterio.crs.CRS.from_wkt(info.crs_wkt).to_epsg() == 32618
    out, valid = src.read(2, 3, 10, 10)
    np.testing.assert_array_equal(out, data[[2, 0], 2:12, 3:13].astype(np.float32))
    assert not valid[2, 3] and valid.sum() == 99
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(2, 3, 10, 10)[0], out)


def test_zarr_zero_size_is_refused(tmp_path):
    path, _ = write_zarr(tmp_path / "empty.zarr", np.zeros((1, 0, 5), np.uint8), crs=None)
    with pytest.raises(RasterReadError, match="zero-size raster"):
        open_raster(path)


def test_pickle_carries_only_path_and_bands_and_reads_in_fresh_process(tmp_path):
    data = ramp(3, 20, 20, "uint8")
    path = write_geotiff(tmp_path / "p.tif", data)
    src = open_raster(path, bands=[2])
    src.read(0, 0, 4, 4)  # open a handle first: it must not be pickled
    blob = pickle.dumps(src)
    assert len(blob) < 400
    code = (
        "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); "
        "d, v = s.read(3, 4, 2, 2); print(d.ravel().tolist(), int(v.sum()))"
    )
    res = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    values, nvalid = res.stdout.decode().split("] ")
    assert [float(x) for x in values.strip("[").split(",")] == data[1, 3:5, 4:6].ravel().tolist()
    assert int(nvalid) == 4


def test_threads_read_concurrently(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    data = ramp(3, 64, 64, "uint16")
    src = open_raster(
        write_geotiff(tmp_path / "t.tif", data, tiled=True, blockxsize=16, blockysize=16)
    )
    windows = [(r, c) for r in range(0, 64, 8) for c in range(0, 64, 8)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda rc: src.read(rc[0], rc[1], 8, 8)[0], windows))
    for (r, c), out in zip(windows, outs, strict=True):
        np.testing.assert_array_equal(out, data[:, r : r + 8, c : c + 8])
    src.close()


def count_opens(monkeypatch) -> list[str]:
    """Record every GDAL open made by the sources."""
    from geoseg.io import raster

    opened: list[str] = []
    real = raster.GdalSource._open

    def spy(self):
        opened.append(self._path)
        return real(self)

    monkeypatch.setattr(raster.GdalSource, "_open", spy)
    return opened


def test_unpickled_copies_share_one_handle_per_thread(tmp_path, monkeypatch):
    # dask unpickles the source afresh for every task: the file must not be re-opened (and its
    # GDAL buffers kept) once per task, which grew a 16384^2 run by ~1.5 MB per task
    data = ramp(3, 32, 32, "uint8")
    path = write_geotiff(tmp_path / "shared.tif", data)
    src = open_raster(path)
    opened = count_opens(monkeypatch)
    blob = pickle.dumps(src)
    for _ in range(50):
        copy = pickle.loads(blob)
        out, _ = copy.read(8, 8, 4, 4)
        np.testing.assert_array_equal(out, data[:, 8:12, 8:12])
    assert opened == []  # the handle opened by open_raster is reused
    src.close()
    pickle.loads(blob).read(0, 0, 2, 2)
    assert opened == [str(path)]  # closed handles are re-opened on demand
    src.close()


def test_rewritten_file_is_reopened(tmp_path):
    path = tmp_path / "r.tif"
    write_geotiff(path, ramp(1, 8, 8, "uint8"))
    first = open_raster(path)
    first.read(0, 0, 8, 8)
    path.unlink()
    fresh = np.full((1, 12, 12), 7, np.uint8)  # another size: another file identity
    write_geotiff(path, fresh)
    again = open_raster(path)
    assert (again.info.height, again.info.width) == (12, 12)
    out, _ = again.read(0, 0, 12, 12)
    np.testing.assert_array_equal(out, fresh.astype(np.float32))
    again.close()
    first.close()


def test_each_thread_keeps_a_bounded_number_of_files_open(tmp_path, monkeypatch):
    from geoseg.io import raster

    closed: list[int] = []
    monkeypatch.setattr(raster, "_HANDLES", raster._HandleCache(per_thread=2))

    class Handle:
        def __init__(self, n):
            self.n = n

        def close(self):
            closed.append(self.n)

    cache = raster._HANDLES
    handles = [cache.get(("f", n), lambda n=n: Handle(n)) for n in range(4)]
    assert [h.n for h in handles] == [0, 1, 2, 3]
    assert closed == [0, 1]  # least recently used first
    assert cache.get(("f", 3), lambda: Handle(99)).n == 3  # still open: reused
    cache.close(("f", 2))
    assert closed == [0, 1, 2]


def test_a_handle_in_use_on_another_thread_is_closed_by_that_thread():
    """Closing a GDAL dataset under another thread's read crashed interrupted runs (SIGSEGV)."""
    from geoseg.io import raster

    closed: list[tuple[int, str]] = []

    class Handle:
        def __init__(self, n):
            self.n = n

        def close(self):
            closed.append((self.n, threading.current_thread().name))

    cache = raster._HandleCache()
    got, release, done = threading.Event(), threading.Event(), threading.Event()

    def reader():  # a worker thread, "reading" its handle until released
        cache.get(("f",), lambda: Handle(1))
        got.set()
        release.wait(30)
        cache.get(("g",), lambda: Handle(2))  # its next read: the retired handle goes now
        done.set()
        release.wait(30)

    thread = threading.Thread(target=reader, name="reader")
    thread.start()
    try:
        assert got.wait(30)
        cache.get(("f",), lambda: Handle(0))  # this thread's own handle of the same file
        cache.close(("f",))
        assert closed == [(0, "MainThread")]  # the reader's handle is still open
        release.set()
        assert done.wait(30)
        assert closed == [(0, "MainThread"), (1, "reader")]
    finally:
        release.set()
        thread.join(30)
    cache.close(("g",))  # the reader has ended: its handle is closed at once
    assert closed[-1] == (2, "MainThread")


def test_non_georeferenced_png(tmp_path):
    path = tmp_path / "plain.png"
    data = ramp(3, 12, 9, "uint8")
    with rasterio.open(path, "w", driver="PNG", height=12, width=9, count=3, dtype="uint8") as d:
        d.write(data)
    info = open_raster(path).info
    assert not info.georeferenced and info.crs_wkt is None
    assert info.transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


# --------------------------------------------------------------------------------------------
# bad input: one-line messages naming the value and the fix
# --------------------------------------------------------------------------------------------


def assert_one_line(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(RasterReadError) as e:
        open_raster(tmp_path / "nope.tif")
    assert_one_line(e, "nope.tif", "does not exist")


def test_text_file_is_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("hello, I am not a raster\n")
    with pytest.raises(RasterReadError) as e:
        open_raster(path)
    assert_one_line(e, "notes.tif", "not a readable raster")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.tif"
    path.write_bytes(b"")
    with pytest.raises(RasterReadError) as e:
        open_raster(path)
    assert_one_line(e, "empty.tif", "0 bytes")


def test_truncated_tiff(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 256, 256), dtype=np.uint8)  # incompressible
    path = write_geotiff(tmp_path / "full.tif", data, tiled=True, blockxsize=64, blockysize=64)
    blob = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RasterReadError) as e:
        open_raster(cut)
    assert_one_line(e, "cut.tif", "truncated or corrupt")


def test_corrupt_block_in_the_middle_names_file_and_window(tmp_path):
    from rasterio.windows import Window

    data = np.random.default_rng(0).integers(0, 255, (1, 256, 256), dtype=np.uint8)
    path = tmp_path / "order.tif"
    prof = dict(
        driver="GTiff",
        height=256,
        width=256,
        count=1,
        dtype="uint8",
        tiled=True,
        blockxsize=64,
        blockysize=64,
        crs="EPSG:4326",
        transform=from_origin(0, 1, 0.01, 0.01),
    )
    # corner tiles first, so a file cut in half still opens and passes the up-front probe
    with rasterio.Env(GDAL_CACHEMAX=0), rasterio.open(path, "w", **prof) as dst:
        dst.write(data[:, 192:, 192:], window=Window(192, 192, 64, 64))
        dst.write(data[:, :64, :64], window=Window(0, 0, 64, 64))
        dst.write(data)
    blob = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(blob[: len(blob) // 2])
    src = open_raster(cut)
    np.testing.assert_array_equal(src.read(0, 0, 64, 64)[0], data[:, :64, :64])
    with pytest.raises(RasterReadError) as e:
        src.read(128, 128, 64, 64)
    assert_one_line(e, "cut.tif", "row=128 col=128 size=64x64", "IReadBlock", "truncated")


def test_complex_dtype(tmp_path):
    data = (ramp(1, 8, 8, "float32") + 1j).astype(np.complex64)
    path = write_geotiff(tmp_path / "c.tif", data)
    with pytest.raises(RasterReadError) as e:
        open_raster(path)
    assert_one_line(e, "complex64", "uint8", "convert")


@pytest.mark.parametrize("bands", [[5], [0], [1, 4]])
def test_band_out_of_range(tmp_path, bands):
    path = write_geotiff(tmp_path / "three.tif", ramp(3, 8, 8, "uint8"))
    with pytest.raises(InputError) as e:
        open_raster(path, bands=bands)
    bad = [b for b in bands if not 1 <= b <= 3][0]
    assert_one_line(e, f"bands {bad}: the raster has 3 bands (1..3)")


def test_directory_that_is_not_zarr(tmp_path):
    with pytest.raises(RasterReadError, match="is a directory"):
        open_raster(tmp_path)


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------


def test_real_landsat_rgb_nodata_border(shared_data):
    src = open_raster(shared_data / "rasters" / "RGB.byte.tif")
    info = src.info
    assert (info.height, info.width, info.count, info.dtype, info.nodata) == (
        718,
        791,
        3,
        "uint8",
        0.0,
    )
    corner, vcorner = src.read(0, 0, 32, 32)
    assert not vcorner.any()  # the black collar is nodata
    centre, vcentre = src.read(340, 380, 32, 32)
    assert vcentre.all() and centre.max() > 0
    with rasterio.open(shared_data / "rasters" / "RGB.byte.tif") as ref:
        np.testing.assert_array_equal(
            centre, ref.read(window=((340, 372), (380, 412))).astype(np.float32)
        )


def test_real_sentinel2_int16_13_bands(shared_data):
    path = next((shared_data / "sen1floods11-sample" / "S2").glob("*.tif"))
    src = open_raster(path, bands=[4, 3, 2])
    assert src.info.dtype == "int16" and src.info.band_indexes == (4, 3, 2)
    assert "4326" in src.info.crs_wkt or "WGS 84" in src.info.crs_wkt
    out, valid = src.read(0, 0, 512, 512)
    with rasterio.open(path) as ref:
        assert ref.count == 13
        np.testing.assert_array_equal(out, ref.read([4, 3, 2]).astype(np.float32))
    assert valid.mean() > 0.5


def test_real_sentinel1_float32_nan(shared_data):
    path = next((shared_data / "sen1floods11-sample" / "S1").glob("*.tif"))
    src = open_raster(path)
    assert src.info.dtype == "float32" and np.isnan(src.info.nodata)
    out, valid = src.read(0, 0, 512, 512)
    with rasterio.open(path) as ref:
        raw = ref.read()
    np.testing.assert_array_equal(valid, ~np.isnan(raw).any(axis=0))
    assert np.isfinite(out).all()


def test_zarr_single_band_2d_and_ambiguous_store(tmp_path):
    import xarray as xr

    img = ramp(1, 12, 9, "float32")[0]
    xr.Dataset({"dem": (("y", "x"), img)}).to_zarr(tmp_path / "one.zarr", zarr_format=3)
    src = open_raster(tmp_path / "one.zarr")
    assert src.info.count == 1 and not src.info.georeferenced
    np.testing.assert_array_equal(src.read(0, 0, 12, 9)[0][0], img)
    two = xr.Dataset({"a": (("y", "x"), img), "b": (("y", "x"), img)})
    two.to_zarr(tmp_path / "two.zarr", zarr_format=3)
    with pytest.raises(RasterReadError) as e:
        open_raster(tmp_path / "two.zarr")
    assert_one_line(e, "holds 2 raster arrays (a, b)", "exactly one")


def _masked_geotiff(path, data, mask):
    prof = dict(
        driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
        dtype=str(data.dtype), nodata=0, tiled=True, blockxsize=16, blockysize=16,
        crs="EPSG:32618", transform=from_origin(500000.0, 4200000.0, 10.0, 10.0),
    )  # fmt: skip
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        dst.write_mask(mask)
    return path


def _sources(tmp_path):
    """One source of each kind that reads through the runs: GeoTIFF, Zarr, array, scaled."""
    data = ramp(3, 37, 53, "uint16")
    data[:, 5, 9] = 0  # nodata in every band
    data[1, 20, 30] = 0  # one band only: still data
    mask = np.full((37, 53), 255, np.uint8)
    mask[30:, :7] = 0
    floats = ramp(2, 37, 53, "float32")
    floats[0, 11, 40] = np.nan
    floats[1, 2, 2] = np.inf
    zarr_path, _ = write_zarr(tmp_path / "in.zarr", data, nodata=0)
    return {
        "gtiff": open_raster(_masked_geotiff(tmp_path / "m.tif", data, mask)),
        "float": open_raster(write_geotiff(tmp_path / "f.tif", floats, nodata=float("nan"))),
        "zarr": open_raster(zarr_path, bands=[3, 1]),
        "array": ArraySource(data, mask > 0),
        "scaled": ScaledSource(open_raster(write_geotiff(tmp_path / "s.tif", data)), [0.5], [1]),
    }


@pytest.mark.parametrize("tile,overlap", [(16, 4), (20, 0), (64, 8), (9, 8)])
def test_read_windows_equals_reading_each_window(tmp_path, tile, overlap):
    # grid batches (runs along rows, batches that wrap to the next row), windows hanging off
    # the raster (reflect padding), and windows wholly outside it
    grid = Grid.create(37, 53, tile, overlap)
    windows = list(grid) + [Window(-5, 50, 8, 8), Window(40, 60, 4, 4), Window(40, 64, 4, 4)]
    for name, src in _sources(tmp_path).items():
        for batch in (3, 5, len(windows)):
            for i in range(0, len(windows), batch):
                part = windows[i : i + batch]
                got = src.read_windows(part)
                assert len(got) == len(part)
                for w, (data, valid) in zip(part, got, strict=True):
                    want, want_valid = src.read(w.row, w.col, w.height, w.width)
                    assert data.dtype == np.float32 and data.shape == want.shape, name
                    np.testing.assert_array_equal(data, want, err_msg=f"{name} {w}")
                    np.testing.assert_array_equal(valid, want_valid, err_msg=f"{name} {w}")


def test_a_run_of_windows_is_one_read(tmp_path, monkeypatch):
    src = open_raster(write_geotiff(tmp_path / "r.tif", ramp(3, 40, 100, "uint8")))
    grid = Grid.create(40, 100, 16, 4)  # 3 rows of 8 windows
    calls = []
    inner = type(src)._read_inside
    monkeypatch.setattr(type(src), "_read_inside", lambda s, c: calls.append(c) or inner(s, c))
    src.read_windows([grid.window(i) for i in range(6, 12)])  # 2 of row 0, 4 of row 1
    assert [(c.row0, c.col0, c.col1) for c in calls] == [(0, 72, 100), (12, 0, 52)]


def test_row_runs_split_where_rows_change_or_columns_jump():
    a, b, c = Window(0, 0, 4, 4), Window(0, 3, 4, 4), Window(0, 7, 4, 4)  # b overlaps, c abuts
    gap, below, back = Window(0, 12, 4, 4), Window(3, 12, 4, 4), Window(3, 0, 4, 4)
    assert row_runs([a, b, c, gap, below, back]) == [[a, b, c], [gap], [below], [back]]
    assert row_runs([Window(0, 0, 4, 4), Window(0, 2, 3, 4)]) == [
        [Window(0, 0, 4, 4)], [Window(0, 2, 3, 4)]
    ]  # fmt: skip
    assert row_runs([]) == []
