"""Corrupt tile and stepper-state files (issue 32): a few hundred random corruptions — byte flips,
truncations, garbage values (NaN, ±inf, ±3.4e38, 1e6, out-of-range cell numbers) in every dataset,
datasets of another shape or type, garbage attributes — each loaded and predicted with, in a
subprocess: every case ends in an smengine error or a prediction whose values are NaN or within
(−1, 2); the interpreter never dies and no other exception escapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_engine import make_tile, small_forest

from smengine.engine import Stepper, predict
from smengine.errors import DataError
from smengine.tiles import TileStore

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    store = make_tile(tmp / "t000_000.h5")
    _, cf, _ = small_forest(store, swi_carry=True, seed=1, n_trees=12)
    model = cf.save(tmp / "m.smf.h5")
    st = Stepper(cf)
    ds = store.to_dataset()
    for d in range(3):
        st.step(ds.isel(time=[d]))
    return {"tile": store.path, "model": model, "state": st.save_state(tmp / "state.h5"), "cf": cf, "tmp": tmp}


def test_a_coarse_index_outside_its_cells_is_refused_not_read_out_of_bounds(files, tmp_path) -> None:
    """A bit flip in /coarse/smap/index (cell 8 → 8388616) segfaulted predict in the C kernel."""
    bad = tmp_path / "bad.h5"
    bad.write_bytes(Path(files["tile"]).read_bytes())
    with h5py.File(bad, "r+") as h5:
        idx = h5["coarse/smap/index"]
        a = idx[...]
        a[5, 7] = 8388616
        idx[...] = a
    with pytest.raises(DataError, match=r"bad.h5: /coarse/smap/index holds cell numbers in \[-1, 8388616\], outside"):
        TileStore.open(bad)
    with h5py.File(bad, "r+") as h5:  # days out of order
        t = h5["time"][...]
        h5["time"][...] = t[::-1]
    with pytest.raises(DataError, match=r"/time is not strictly increasing"):
        TileStore.open(bad)
    assert np.isfinite(predict(TileStore.open(files["tile"]), files["cf"])["sm"].values).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzz_corrupted_tiles_and_states_never_crash_the_interpreter(files, tmp_path, seed) -> None:
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run(
        [sys.executable, str(HERE / "_fuzz_files.py"), files["tile"], files["model"], files["state"], work, "200",
         str(seed)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, f"exit {res.returncode} (negative: killed by a signal)\n{res.stderr[-3000:]}"
    got = json.loads(res.stdout)
    assert got["unexpected"] == [], got
    out = got["outcomes"]
    assert sum(out.values()) == 200
    # both fates occur for both kinds of file: the corruptions are real, and harmless ones still load
    for which in ("tile", "state"):
        assert out.get(f"{which}: ok", 0) > 0 and out.get(f"{which}: DataError", 0) > 0, out
