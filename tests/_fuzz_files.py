"""Load randomly corrupted tile and stepper-state files and predict with them; print the outcomes (JSON).

Run by tests/test_fuzz_files.py in a subprocess (a crash of the interpreter fails that test):
``python _fuzz_files.py TILE MODEL STATE WORKDIR N SEED``."""

import collections
import json
import shutil
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np

from smengine.engine import Stepper, predict
from smengine.errors import SMEngineError
from smengine.model import CompiledForest
from smengine.tiles import TileStore

tile, model, state, work = (Path(a) for a in sys.argv[1:5])
n, seed = int(sys.argv[5]), int(sys.argv[6])
warnings.simplefilter("ignore")
cf = CompiledForest.load(model)
rng = np.random.default_rng(seed)
GARBAGE = np.array([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e6, -1.0, 0.0, 2**31 - 1, -(2**31), 1e20])


def datasets(h5):
    out = []
    h5.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return out


def corrupt(src: Path, dst: Path, kind: int) -> str:
    shutil.copyfile(src, dst)
    if kind == 0:  # byte flips
        b = bytearray(dst.read_bytes())
        for _ in range(int(rng.integers(1, 20))):
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        dst.write_bytes(bytes(b))
        return "flips"
    if kind == 1:  # truncated
        b = dst.read_bytes()
        dst.write_bytes(b[: int(rng.integers(0, len(b)))])
        return "truncated"
    with h5py.File(dst, "r+") as h5:
        names = datasets(h5)
        if kind == 2:  # garbage values into a dataset
            name = names[int(rng.integers(0, len(names)))]
            d = h5[name]
            if d.size == 0:
                return f"values:{name}(empty)"
            a = d[...]
            flat = a.reshape(-1)
            k = int(rng.integers(1, max(2, flat.size // 10)))
            idx = rng.integers(0, flat.size, k)
            g = rng.choice(GARBAGE, k)
            if a.dtype.kind in "iu":
                g = np.clip(
                    np.nan_to_num(g, nan=-7, posinf=2**31 - 1, neginf=-(2**31)),
                    np.iinfo(a.dtype).min,
                    np.iinfo(a.dtype).max,
                )
            elif a.dtype.kind not in "f":
                return f"values:{name}(kind {a.dtype.kind})"
            flat[idx] = g.astype(a.dtype)
            d[...] = a
            return f"values:{name}"
        if kind == 3:  # a dataset replaced by one of another shape or dtype
            name = names[int(rng.integers(0, len(names)))]
            d = h5[name]
            shape = tuple(max(0, s + int(rng.integers(-2, 3))) for s in d.shape) or (3,)
            dtype = rng.choice([d.dtype, np.float64, np.int8, np.float32])
            del h5[name]
            h5.create_dataset(name, data=np.zeros(shape, dtype=dtype) + 1)
            return f"reshaped:{name}"
        # kind 4: an attribute set to garbage
        holders = [h5] + [h5[n] for n in names]
        holder = holders[int(rng.integers(0, len(holders)))]
        keys = list(holder.attrs)
        if not keys:
            return "attrs(none)"
        key = keys[int(rng.integers(0, len(keys)))]
        holder.attrs[key] = (
            str(rng.choice(["", "garbage", "{}", "[1,2]", "-1", "1e400"]))
            if rng.random() < 0.5
            else float(rng.choice(GARBAGE))
        )
        return f"attr:{holder.name}:{key}"


def check(ds) -> None:
    sm = np.asarray(ds["sm"].values)
    ok = np.isnan(sm) | ((sm > -1) & (sm < 2))
    if not ok.all():
        raise AssertionError(f"sm outside (-1, 2): {sm[~ok][:5]}")


outcome = collections.Counter()
unexpected = []
for i in range(n):
    which = "tile" if i % 2 == 0 else "state"
    kind = int(rng.integers(0, 5))
    dst = work / f"{which}{i}.h5"
    what = corrupt(tile if which == "tile" else state, dst, kind)
    try:
        if which == "tile":
            check(predict(TileStore.open(dst), cf))
        else:
            st = Stepper.load_state(dst, cf)
            ds = TileStore.open(tile).to_dataset()
            check(st.step(ds.isel(time=[3])))
        outcome[f"{which}: ok"] += 1
    except SMEngineError as exc:
        outcome[f"{which}: {type(exc).__name__}"] += 1
    except Exception as exc:  # noqa: BLE001
        outcome[f"{which}: UNEXPECTED {type(exc).__name__}"] += 1
        unexpected.append(f"{i} {which} {what}: {type(exc).__name__}: {str(exc)[:200]}")
print(json.dumps({"outcomes": dict(sorted(outcome.items())), "unexpected": unexpected}, indent=1))
