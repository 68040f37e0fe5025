"""Fault catalogue, product side: concurrent Zarr writers, a held lock, output folders that
cannot be written (each case: the message, and nothing already written lost)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from smengine.errors import DataError
from smengine.grid import Grid
from smengine.product import _store_lock, make_product, open_product, write_netcdf, write_zarr

DAYS = np.arange("2020-07-01", "2020-07-07", dtype="datetime64[D]")


@pytest.fixture(scope="module")
def product() -> xr.Dataset:
    grid = Grid.from_bounds(4_321_000, 3_210_000, 4_326_000, 3_214_000)
    rng = np.random.default_rng(1)
    shape = (DAYS.size, *grid.shape)
    sm = rng.uniform(0.05, 0.45, shape).astype(np.float32)
    z = np.zeros(shape, np.float32)
    return make_product(
        sm, z, z, np.ones(shape, np.float32), np.zeros(shape, np.uint8), grid=grid, times=DAYS, history="faults"
    )


_WRITER = textwrap.dedent(
    """
    import sys, time
    from smengine.product import open_product, write_zarr
    src, store, go, i0, i1 = sys.argv[1:6]
    ds = open_product(src).isel(time=slice(int(i0), int(i1))).load()
    while not __import__("os").path.exists(go):
        time.sleep(0.005)
    try:
        write_zarr(ds, store)
        print("ok")
    except Exception as exc:
        print(type(exc).__name__, exc)
    """
)


@pytest.mark.parametrize("trial", range(4))
def test_two_writers_extending_one_zarr_store_never_destroy_it(product, tmp_path, trial):
    """Two processes append to one store at the same moment (7 of 10 trials destroyed it before
    the lock): one appends, the other either appends after it or fails cleanly; the store keeps
    every day written, readable, equal to the product."""
    src = write_netcdf(product, tmp_path / "p.nc")
    store = write_zarr(product.isel(time=slice(0, 2)), tmp_path / "p.zarr")
    go = tmp_path / "go"
    script = tmp_path / "w.py"
    script.write_text(_WRITER)
    # writer A: days 2-3; writer B: days 2-3 as well (trial even) or days 4-5 (trial odd)
    ranges = [(2, 4), (2, 4) if trial % 2 == 0 else (4, 6)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(src), str(store), str(go), str(a), str(b)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a, b in ranges
    ]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    results = [o.strip() for o, _ in outs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert "ok" in results, results
    for r in results:
        assert r == "ok" or r.startswith("ValidationError cannot append to"), r
    with open_product(store) as ds:
        n = ds.sizes["time"]
        xr.testing.assert_equal(ds["sm"], product["sm"].sel(time=ds["time"]))  # days 4-5 may come first
    assert n == 2 + 2 * results.count("ok")


def test_a_held_lock_makes_the_writer_wait_then_fail_naming_the_holder(product, tmp_path):
    store = write_zarr(product.isel(time=slice(0, 2)), tmp_path / "p.zarr")
    held = rf"p.zarr is being written by pid {os.getpid()} \(lock .*\.p\.zarr\.lock\)"
    with _store_lock(store, 1.0), pytest.raises(DataError, match=held):
        write_zarr(product.isel(time=[2]), store, lock_timeout=0.2)
    write_zarr(product.isel(time=[2]), store)  # released: the append goes through
    with open_product(store) as ds:
        assert ds.sizes["time"] == 3
    assert sorted(os.listdir(tmp_path)) == ["p.zarr"]  # the lock file went with the lock


def test_read_only_output_folder_is_one_clean_error(product, readonly_dir):
    with pytest.raises(DataError, match=r"readonly/p.nc.*(Read-only|Permission)"):
        write_netcdf(product, readonly_dir / "p.nc")
    with pytest.raises(DataError, match=r"readonly/p.zarr.*(Read-only|Permission)"):
        write_zarr(product, readonly_dir / "p.zarr")
    assert os.listdir(readonly_dir) == []


def test_disk_full_while_writing_a_product_is_one_clean_error(product, full_disk):
    grid = Grid.from_bounds(4_300_000, 3_200_000, 4_400_000, 3_300_000)  # 100 x 100 pixels
    shape = (40, *grid.shape)
    sm = np.random.default_rng(2).uniform(0.05, 0.45, shape).astype(np.float32)  # incompressible: > 1 MiB
    big = make_product(
        sm, sm, sm, np.ones(shape, np.float32), np.zeros(shape, np.uint8), grid=grid, times=DAYS[0] + np.arange(40)
    )
    keep = write_netcdf(product, full_disk / "keep.nc")
    before = keep.read_bytes()
    with pytest.raises(DataError, match=r"small/big.nc.*(No space|space)"):
        write_netcdf(big, full_disk / "big.nc")
    assert sorted(os.listdir(full_disk)) == ["keep.nc"] and keep.read_bytes() == before


def test_disk_full_while_appending_to_a_zarr_store_keeps_its_days(full_disk):
    grid = Grid.from_bounds(4_300_000, 3_200_000, 4_400_000, 3_300_000)
    days = DAYS[0] + np.arange(60)
    shape = (days.size, *grid.shape)
    sm = np.random.default_rng(3).uniform(0.05, 0.45, shape).astype(np.float32)
    z = np.zeros(shape, np.float32)
    ds = make_product(sm, z, z, np.ones(shape, np.float32), np.zeros(shape, np.uint8), grid=grid, times=days)
    store = write_zarr(ds.isel(time=slice(0, 2)), full_disk / "p.zarr")
    with pytest.raises(DataError, match=r"p.zarr.*No space"):
        write_zarr(ds.isel(time=slice(2, 60)), store)
    with open_product(store) as back:  # the committed days are intact and readable
        assert back.sizes["time"] == 2
        np.testing.assert_array_equal(back["sm"].values, sm[:2])
