"""Output paths and lock files (security): a name read from a tile file (its ``tile_id``
attribute, or its file stem) never takes predict's outputs out of the output folder, and a
symbolic link planted as a Zarr store's lock file is never followed (its target is left
byte for byte as it was)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from test_engine import make_tile  # tests/ is on sys.path (rootdir-less test modules)

from smengine._io import inside, safe_name
from smengine.engine import run
from smengine.errors import ConfigError, DataError
from smengine.model import CompiledForest
from smengine.product import _store_lock, open_product

#: tile_id attributes that point out of the output folder (or into a sub-folder of it);
#: "{outside}" is replaced by an absolute path beside the output folder.
BAD_IDS = {"absolute": "{outside}/abs", "dotdot": "../escape", "slash": "sub/escape"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small forest on the tile's five raw features, saved to a file."""
    tmp = tmp_path_factory.mktemp("paths_model")
    names = ["elev", "sand", "s1", "ndvi", "smap"]
    rng = np.random.default_rng(0)
    X = rng.random((300, len(names)))
    rf = RandomForestRegressor(5, random_state=0, n_jobs=1).fit(X, 0.2 + 0.1 * X[:, 0])
    cf = CompiledForest.from_sklearn(rf, feature_names=names)
    return cf, cf.save(tmp / "m.smf.h5")


def _tree(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (not following links, leaving out ``skip``) → (size, mtime)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _bad_tile(tmp_path: Path, kind: str) -> Path:
    tid = BAD_IDS[kind].format(outside=tmp_path / "outside")
    return make_tile(tmp_path / "tiles" / f"t_{kind}.h5", tile_id=tid).path


# ------------------------------------------------------------------------- safe_name / inside
@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../x", "a/b", "a\\b", "..", ".", "", ".hidden", "a\x00b", "a\nb", "x" * 201, 7],
)
def test_safe_name_refuses_what_is_not_a_plain_file_name(name):
    with pytest.raises(DataError, match=r"tiles/a\.h5: attribute tile_id: .* cannot name an output file"):
        safe_name(name, "tiles/a.h5: attribute tile_id")
    with pytest.raises(ConfigError):
        safe_name(name, "option", ConfigError)


@pytest.mark.parametrize("name", ["t000_000", "tile 1", "Zürich-7", "a.b", "x" * 200])
def test_safe_name_keeps_plain_names_unchanged(name):
    assert safe_name(name, "what") == name


def test_inside_resolves_dotdot_and_links(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    assert inside(out, out / "sub" / "f.nc") == out / "sub" / "f.nc"
    assert inside(out, out / "new" / "f.nc") == out / "new" / "f.nc"  # missing parts are fine
    for bad in (out / ".." / "f.nc", tmp_path / "f.nc", out / "link" / "f.nc", out):
        with pytest.raises(DataError, match="outside the output folder"):
            inside(out, bad, "tile x")


# ------------------------------------------------------------------------- tile_id → output path
@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
@pytest.mark.parametrize("kind", sorted(BAD_IDS))
def test_a_tile_id_that_leaves_the_output_folder_is_refused(model, tmp_path, kind, fmt):
    path = _bad_tile(tmp_path, kind)
    out = tmp_path / "out"
    (tmp_path / "outside").mkdir()
    before = _tree(tmp_path, skip=out)
    with pytest.raises(DataError, match=rf"t_{kind}\.h5: attribute tile_id: .* cannot name an output file"):
        run([path], model[0], out, file_days=3, format=fmt)
    assert _tree(tmp_path, skip=out) == before  # nothing written (or removed) outside out
    assert not out.exists() or not any(out.rglob("*"))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "escape.zarr").exists()
    assert os.listdir(tmp_path / "outside") == []


def test_a_tile_without_tile_id_is_named_by_its_file_and_dotdot_stems_are_refused(model, tmp_path):
    out = tmp_path / "out"
    plain = make_tile(tmp_path / "tiles" / "plain.h5", tile_id="").path  # no id: the file stem names it
    res = run([plain], model[0], out, file_days=7)
    assert [p.relative_to(out).as_posix() for p in res.written] == ["plain/plain_20200501_20200508.nc"]
    dots = make_tile(tmp_path / "tiles" / "...h5", tile_id="").path  # stem ".."
    before = _tree(tmp_path, skip=out)
    with pytest.raises(DataError, match=r"\.\.\.h5: tile without tile_id, its file name: '\.\.' cannot name"):
        run([dots], model[0], out, file_days=7)
    assert _tree(tmp_path, skip=out) == before


def test_a_tile_folder_linked_out_of_the_output_folder_is_refused(model, tmp_path):
    tile = make_tile(tmp_path / "tiles" / "t000_000.h5")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "t000_000").symlink_to(elsewhere)
    with pytest.raises(DataError, match=r"t000_000.h5: .*t000_000 .*is outside the output folder"):
        run([tile.path], model[0], out, file_days=3)
    assert os.listdir(elsewhere) == []


def test_keep_going_records_the_bad_tiles_and_predicts_the_good_one(model, tmp_path):
    good = make_tile(tmp_path / "tiles" / "t000_000.h5").path
    bad = [_bad_tile(tmp_path, k) for k in sorted(BAD_IDS)]
    out = tmp_path / "out"
    (tmp_path / "outside").mkdir()
    before = _tree(tmp_path, skip=out)
    res = run([*bad, good], model[0], out, file_days=7, on_error="skip")
    assert [p.relative_to(out).as_posix() for p in res.written] == ["t000_000/t000_000_20200501_20200508.nc"]
    assert sorted(Path(n).name for n, _ in res.failed) == sorted(p.name for p in bad)
    assert all("DataError" in why and "attribute tile_id" in why for _, why in res.failed)
    assert _tree(tmp_path, skip=out) == before


def test_cli_predict_refuses_a_bad_tile_id(model, tmp_path):
    """``smengine predict`` in a fresh interpreter: one clean error naming the tile file;
    with --keep-going each bad tile is reported and the good one written."""
    good = make_tile(tmp_path / "tiles" / "t000_000.h5").path
    bad = [_bad_tile(tmp_path, k) for k in sorted(BAD_IDS)]
    out = tmp_path / "out"
    (tmp_path / "outside").mkdir()
    before = _tree(tmp_path, skip=out)

    def predict(*args: object) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "smengine", "predict", str(model[1]), *map(str, args), "--out", str(out)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    r = predict(bad[0], "--file-days", "7")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"Error: {bad[0]}: attribute tile_id:" in r.stderr and "cannot name an output file" in r.stderr
    r = predict(*bad, good, "--file-days", "7", "--keep-going")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "wrote 1 files, skipped 0 existing, 3 tiles failed" in r.stdout
    for p in bad:
        assert f"failed {p}: DataError: {p}: attribute tile_id:" in r.stderr
    assert _tree(tmp_path, skip=out) == before
    assert sorted(q.relative_to(out).as_posix() for q in out.rglob("*")) == [
        "t000_000",
        "t000_000/t000_000_20200501_20200508.nc",
    ]


# ------------------------------------------------------------------------- lock files
@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the output folder, with an old modification time."""
    v = tmp_path / "victim" / "precious.txt"
    v.parent.mkdir()
    v.write_bytes(b"precious data\n" * 100)
    os.utime(v, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return v


def _state(p: Path) -> tuple[bytes, int, int]:
    st = p.stat()
    return p.read_bytes(), st.st_mtime_ns, st.st_mode


def test_a_lock_symlink_to_a_victim_is_refused_and_the_victim_untouched(model, tmp_path, victim):
    tile = make_tile(tmp_path / "tiles" / "t000_000.h5")
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".t000_000.zarr.lock"
    lock.symlink_to(victim)
    before = _state(victim)
    with pytest.raises(DataError, match=r"\.t000_000\.zarr\.lock is a symbolic link .*precious\.txt"):
        run([tile.path], model[0], out, file_days=3, format="zarr")
    assert _state(victim) == before
    assert lock.is_symlink() and not (out / "t000_000.zarr").exists()
    # a dangling link: refused too, and nothing is created at its target
    lock.unlink()
    lock.symlink_to(tmp_path / "victim" / "new.txt")
    with pytest.raises(DataError, match="is a symbolic link"):
        run([tile.path], model[0], out, file_days=3, format="zarr")
    assert sorted(os.listdir(victim.parent)) == ["precious.txt"]
    # once the link is gone, the same run works and leaves no lock file
    lock.unlink()
    res = run([tile.path], model[0], out, file_days=3, format="zarr")
    assert len(res.written) == 3
    with open_product(out / "t000_000.zarr") as ds:
        assert ds.sizes["time"] == 7
    assert sorted(os.listdir(out)) == ["t000_000.zarr"]
    assert _state(victim) == before


def test_a_hard_linked_or_stale_lock_file_is_never_written_to(tmp_path, victim):
    """A regular file already at the lock's path (left by a killed writer, or a hard link to a
    victim) is not truncated nor written: it is removed once locked and a new one created."""
    store = tmp_path / "out" / "p.zarr"
    store.parent.mkdir()
    lock = store.with_name(".p.zarr.lock")
    os.link(victim, lock)
    before = _state(victim)
    with _store_lock(store, 1.0):  # proceeds
        assert lock.exists() and not os.path.samefile(lock, victim)
        assert lock.read_text() == f"pid {os.getpid()}"
    assert _state(victim) == before and victim.stat().st_nlink == 1
    assert not lock.exists()
    lock.write_text("pid 999999999")  # left by a writer that was killed
    with _store_lock(store, 1.0):
        assert lock.read_text() == f"pid {os.getpid()}"
    assert not lock.exists()


def test_something_else_at_the_lock_path_is_refused(tmp_path):
    store = tmp_path / "p.zarr"
    lock = tmp_path / ".p.zarr.lock"
    os.mkfifo(lock)
    with pytest.raises(DataError, match=r"\.p\.zarr\.lock exists and is not a regular file"), _store_lock(store, 1.0):
        pass
    lock.unlink()
    lock.mkdir()
    with pytest.raises(DataError, match=r"cannot lock .*p\.zarr"), _store_lock(store, 1.0):
        pass


def test_cli_predict_zarr_refuses_a_lock_symlink(model, tmp_path, victim):
    tile = make_tile(tmp_path / "tiles" / "t000_000.h5")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".t000_000.zarr.lock").symlink_to(victim)
    before = _state(victim)
    cmd = [sys.executable, "-m", "smengine", "predict", str(model[1]), str(tile.path), "--out", str(out)]
    r = subprocess.run([*cmd, "--format", "zarr"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert ".t000_000.zarr.lock is a symbolic link" in r.stderr
    assert _state(victim) == before
