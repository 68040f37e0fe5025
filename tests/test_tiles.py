"""TileStore: HDF5 layout, zero-copy memmaps, atomic writes, appending days."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from smengine.errors import DataError, ValidationError
from smengine.grid import Grid
from smengine.tiles import TileStore, TileWriter


@pytest.fixture
def tgrid():
    return Grid.from_bounds(4_321_000, 2_987_000, 4_333_000, 2_997_000, tile_size=100)  # 10x12 px


def _write(path, tgrid, days=("2020-01-01", "2020-01-02", "2020-01-04"), seed=0, fail_at=None):
    rng = np.random.default_rng(seed)
    ny, nx = tgrid.subpixel_shape
    static = rng.random((2, ny, nx)).astype(np.float32)
    dynamic = rng.random((len(days), 3, ny, nx)).astype(np.float32)
    index = (np.arange(ny)[:, None] // 8) * 3 + np.arange(nx)[None, :] // 16
    n_cells = int(index.max()) + 1
    index[0, 0] = -1
    coarse = rng.random((len(days), n_cells)).astype(np.float32)
    units = {"elev": "m", "clay": "%", "s1": "m3 m-3", "ndvi": "1", "lst": "K", "cci": "m3 m-3"}
    w = TileWriter(
        path,
        tgrid,
        days,
        ["elev", "clay"],
        ["s1", "ndvi", "lst"],
        units,
        {"elev": "dem.tif"},
        {"cci": (index, n_cells)},
        {"note": "test"},
        "t000_000",
    )
    with w:
        for i, n in enumerate(["elev", "clay"]):
            w.write_static(n, static[i])
        for t in range(len(days)):
            if fail_at is not None and t == fail_at:
                raise RuntimeError("boom")
            for i, n in enumerate(["s1", "ndvi", "lst"]):
                w.write_dynamic(t, n, dynamic[t, i])
            w.write_coarse(t, "cci", coarse[t])
    return static, dynamic, index, coarse


def test_roundtrip_values_names_units(tmp_path, tgrid):
    path = tmp_path / "t.h5"
    static, dynamic, index, coarse = _write(path, tgrid)
    s = TileStore.open(path)
    assert s.grid == tgrid and s.tile_id == "t000_000"
    assert s.feature_names == ["elev", "clay", "s1", "ndvi", "lst", "cci"]
    assert s.units["clay"] == "%" and s.sources["elev"] == "dem.tif" and s.attrs == {"note": "test"}
    assert list(s.times.astype(str)) == ["2020-01-01", "2020-01-02", "2020-01-04"]
    np.testing.assert_array_equal(s.static, static)
    np.testing.assert_array_equal(s.dynamic, dynamic)
    np.testing.assert_array_equal(s.coarse["cci"].values, coarse)
    np.testing.assert_array_equal(s.coarse["cci"].index, index)
    assert s.transform == tuple(tgrid.subpixel_transform.to_gdal())
    assert "LAEA" in s.crs_wkt or "Lambert" in s.crs_wkt
    # features(): static, dynamic, coarse expanded through the index
    t = s.day_index("2020-01-04")
    f = s.features(t)
    np.testing.assert_array_equal(f[:2], static)
    np.testing.assert_array_equal(f[2:5], dynamic[2])
    expected = coarse[2][np.maximum(index, 0)]
    expected[index < 0] = np.nan
    np.testing.assert_array_equal(f[5], expected)
    with pytest.raises(Exception, match="2020-01-03"):
        s.day_index("2020-01-03")


def test_memmaps_are_zero_copy_read_only_views_of_contiguous_datasets(tmp_path, tgrid):
    path = tmp_path / "t.h5"
    _write(path, tgrid)
    s = TileStore.open(path)
    for arr in (s.static, s.dynamic, s.coarse["cci"].values, s.coarse["cci"].index):
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
    with h5py.File(path, "r") as h5:
        for name in ("static", "dynamic", "coarse/cci/values"):
            ds = h5[name]
            assert ds.chunks is None and ds.compression is None
            assert (
                ds.id.get_offset()
                == (s.static if name == "static" else s.dynamic if name == "dynamic" else s.coarse["cci"].values).offset
            )
    with pytest.raises(ValueError):
        s.static[0, 0, 0] = 1.0


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, tgrid):
    path = tmp_path / "t.h5"
    with pytest.raises(RuntimeError, match="boom"):
        _write(path, tgrid, fail_at=1)
    assert os.listdir(tmp_path) == []
    static, *_ = _write(path, tgrid, seed=1)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        _write(path, tgrid, seed=2, fail_at=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["t.h5"]
    np.testing.assert_array_equal(TileStore.open(path).static, static)


def test_same_inputs_same_bytes(tmp_path, tgrid):
    _write(tmp_path / "a.h5", tgrid, seed=3)
    _write(tmp_path / "b.h5", tgrid, seed=3)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_append_days(tmp_path, tgrid):
    path = tmp_path / "t.h5"
    static, dynamic, index, coarse = _write(path, tgrid)
    ny, nx = tgrid.subpixel_shape
    new = np.full((2, 3, ny, nx), 0.5, np.float32)
    TileStore.append_days(path, ["2020-01-05", "2020-01-06"], new, {"cci": np.ones((2, coarse.shape[1]))})
    s = TileStore.open(path)
    assert s.times.size == 5
    np.testing.assert_array_equal(s.dynamic[:3], dynamic)
    np.testing.assert_array_equal(s.dynamic[3:], new)
    np.testing.assert_array_equal(s.coarse["cci"].values[3:], 1.0)
    np.testing.assert_array_equal(s.static, static)
    with pytest.raises(ValidationError, match="must follow"):
        TileStore.append_days(path, ["2020-01-02"])
    # coverage: the old days as they were, the new ones where data were given
    assert s.covered("s1").all() and list(s.covered("cci")) == [True] * 5
    TileStore.append_days(path, ["2020-01-07"], new[:1])
    s = TileStore.open(path)
    assert s.covered("ndvi").all() and list(s.covered("cci")) == [True] * 5 + [False]
    with pytest.raises(ValidationError, match="no coarse layer 'smap'"):
        TileStore.append_days(path, ["2020-01-08"], coarse={"smap": np.ones((1, 3))})
    with pytest.raises(ValidationError, match="coarse 'cci' shape"):
        TileStore.append_days(path, ["2020-01-08"], coarse={"cci": np.ones((2, coarse.shape[1]))})
    assert sorted(os.listdir(tmp_path)) == ["t.h5"]


def test_coverage_marks_written_days_and_legacy_tiles_cover_all(tmp_path, tgrid):
    path = tmp_path / "t.h5"
    ny, nx = tgrid.subpixel_shape
    with TileWriter(
        path,
        tgrid,
        ["2020-01-01", "2020-01-02", "2020-01-03"],
        ["elev"],
        ["a", "b"],
        {"elev": "m", "a": "1", "b": "1", "c": "1"},
        {},
        {"c": (np.zeros((ny, nx)), 1)},
    ) as w:
        w.write_static("elev", np.zeros((ny, nx)))
        w.write_dynamic(0, "a", np.ones((ny, nx)))
        w.write_dynamic(2, "b", np.ones((ny, nx)))
        w.write_coarse(1, "c", [1.0])
    s = TileStore.open(path)
    assert [list(s.covered(n)) for n in "abc"] == [[True, False, False], [False, False, True], [False, True, False]]
    with pytest.raises(Exception, match="'elev' is not a daily layer"):
        s.covered("elev")
    with h5py.File(path, "a") as h5:  # a tile written before coverage was recorded
        del h5["coverage"]
    assert all(TileStore.open(path).covered(n).all() for n in "abc")


def test_open_errors_name_the_file(tmp_path, tgrid):
    path = tmp_path / "t.h5"
    _write(path, tgrid)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DataError, match="cut.h5"):
        TileStore.open(cut)
    with pytest.raises(DataError, match="missing.h5"):
        TileStore.open(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = 1
    with pytest.raises(DataError, match="not a smengine tile store"):
        TileStore.open(other)


def test_writer_validation(tmp_path, tgrid):
    with pytest.raises(ValidationError, match="strictly increasing"):
        TileWriter(tmp_path / "x.h5", tgrid, ["2020-01-02", "2020-01-01"])
    with pytest.raises(Exception, match="units missing"):
        TileWriter(tmp_path / "x.h5", tgrid, [], ["a"])
    w = TileWriter(tmp_path / "x.h5", tgrid, [], ["a"], [], {"a": "m"})
    with pytest.raises(ValidationError, match="shape"), w:
        w.write_static("a", np.zeros((3, 3)))
    assert os.listdir(tmp_path) == []
