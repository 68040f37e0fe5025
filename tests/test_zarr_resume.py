"""A per-tile Zarr store killed mid-append resumes (issue 32). xarray writes a store's group attributes
before its arrays, so a kill in between leaves the provenance of the next day range (its input digest)
beside the arrays of the previous one; resume compared that digest with the store's last day and said
"the tile's data changed" (2 of 20 random kills). The digest now names the day it covers
(``smengine_inputs_day``) and is checked there."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from test_engine import DAYS, make_tile, small_forest

from smengine.engine import run
from smengine.errors import DataError

VARS = ("sm", "sm_uncertainty", "quality_flag")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zarr_resume")
    store = make_tile(tmp / "t000_000.h5")
    _, cf, _ = small_forest(store, swi_carry=True, seed=1, n_trees=12)
    full = tmp / "full"
    run([store], cf, full, format="zarr", file_days=1, n_threads=1)
    return {"store": store, "cf": cf, "model": cf.save(tmp / "m.smf.h5"), "full": full / "t000_000.zarr"}


def _same(a: Path, b: Path) -> None:
    x, y = xr.open_dataset(a, engine="zarr"), xr.open_dataset(b, engine="zarr")
    np.testing.assert_array_equal(x["time"].values, y["time"].values)
    for v in VARS:
        np.testing.assert_array_equal(x[v].values, y[v].values, err_msg=v)


def test_attributes_of_the_next_range_beside_the_arrays_of_the_last_resume(world, tmp_path) -> None:
    """The state a kill between xarray's set_attributes and its array writes leaves, made by hand."""
    part = tmp_path / "part"
    run([world["store"]], world["cf"], part, days=DAYS[:3], format="zarr", file_days=1, n_threads=1)
    z = part / "t000_000.zarr"
    attrs = json.loads((z / ".zattrs").read_text())
    nxt = json.loads((world["full"] / ".zattrs").read_text())  # the attributes of a later append
    assert attrs["smengine_inputs"] != nxt["smengine_inputs"] and attrs["smengine_inputs_day"] == str(DAYS[2])
    attrs.update(smengine_inputs=nxt["smengine_inputs"], smengine_inputs_day=nxt["smengine_inputs_day"])
    (z / ".zattrs").write_text(json.dumps(attrs))
    run([world["store"]], world["cf"], part, format="zarr", file_days=1, n_threads=1)
    _same(z, world["full"])
    # a tile whose data did change is still refused
    other = make_tile(tmp_path / "t000_000.h5", seed=4)
    with pytest.raises(DataError, match="cannot resume: the tile's data changed"):
        run([other], world["cf"], part, format="zarr", file_days=1, n_threads=1)


RUN = """
import sys, warnings
warnings.simplefilter("ignore")
from smengine.engine import run
from smengine.model import CompiledForest
from smengine.tiles import TileStore
run([TileStore.open(sys.argv[1])], CompiledForest.load(sys.argv[2]), sys.argv[3], format="zarr", file_days=1,
    n_threads=1)
"""


@pytest.mark.slow
def test_random_kills_mid_append_always_resume_to_the_uninterrupted_store(world, tmp_path) -> None:
    rng = np.random.default_rng(0)
    args = [sys.executable, "-c", RUN, str(world["store"].path), str(world["model"])]
    t0 = time.perf_counter()
    subprocess.run([*args, str(tmp_path / "timing")], check=True, capture_output=True)
    whole = time.perf_counter() - t0
    for i in range(20):
        out = tmp_path / f"o{i}"
        p = subprocess.Popen([*args, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.0) * whole)
        p.send_signal(signal.SIGKILL)
        p.wait()
        res = subprocess.run([*args, str(out)], capture_output=True, text=True)
        assert res.returncode == 0, f"kill {i}: {res.stderr[-2000:]}"
        _same(out / "t000_000.zarr", world["full"])
        shutil.rmtree(out)
