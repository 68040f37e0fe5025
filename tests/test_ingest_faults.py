"""Ingest faults: nothing silent, nothing lost (damaged GRIB, local-time NetCDF, implausible
values, missing units, source files changed in place, a full disk or read-only output folder,
temporary files left by a killed run, tile permissions).

Real ERA5/H14 GRIB files are copied from ``shared/data`` into ``tmp_path`` before they are
damaged; the tests that need them are marked ``data`` and skip when the data are absent.
The output-side checks run the ``smengine`` command in a subprocess (a file-size limit, or a
tmpfs mount where the test runs as root), so that a crash of the interpreter is seen as one.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
import test_ingest  # tests/ is on sys.path (rootdir-less test modules)
from affine import Affine

from smengine._io import atomic_write
from smengine.errors import ConfigError, DataError, DataLossWarning, SMEngineWarning
from smengine.grid import Grid
from smengine.ingest import MAX_INVALID_FRACTION, SourceSpec, _check_grib_messages, ingest, open_source
from smengine.tiles import TileStore, TileWriter, remove_stale_temps

ERA5 = "era5/era5-2mt-2019-03-uk.grib"
H14 = "hsaf_h14/H14_2014051500.grib"
FRAME = 3360  # each ERA5 message: 3342 bytes + 18 NUL bytes of padding (a multiple of 120)
CLI = [sys.executable, "-c", "from smengine.cli import main; main()"]
FINE = Affine(250, 0, 4_321_000, 0, -250, 3_000_000)
BOX = ["--bounds", "4321000", "2980000", "4341000", "3000000", "--tile-size", "10"]


@pytest.fixture
def era5(data_dir, tmp_path):
    """The ERA5 GRIB's bytes (the file itself stays where it is)."""
    return (data_dir / "gridded" / ERA5).read_bytes()


def _grid():
    return Grid.from_bounds(4_321_000, 2_980_000, 4_341_000, 3_000_000, tile_size=10)  # 2x2 tiles


def _write_tif(path, data, transform=FINE, units="m3 m-3", tags=None):
    test_ingest._write_tif(path, data, transform, units=units, tags=tags)
    return path


def _daily_tifs(folder, n_days=3, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    return [
        _write_tif(folder / f"s1_2020010{d + 1}.tif", scale * rng.random((80, 80)), tags={"time": f"2020-01-0{d + 1}"})
        for d in range(n_days)
    ]


def _nc(path, data, *, time_units="days since 2020-01-01 00:00:00", times=None, attrs=None, dtype="f4", enc=None):
    """A CF NetCDF on lat/lon (50.875…N, 10.125…E, 0.25°) with variable ``v`` (T, Y, X);
    ``time_units`` None: a static layer (no time axis, ``data[0]``); ``attrs`` None: no units."""
    netCDF4 = pytest.importorskip("netCDF4")
    data = np.asarray(data)
    nt = data.shape[0]
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("lat", data.shape[1])
        nc.createDimension("lon", data.shape[2])
        if time_units is not None:
            nc.createDimension("time", nt)
            t = nc.createVariable("time", "f8", ("time",))
            t.units = time_units
            t[:] = np.arange(nt) if times is None else times
        else:
            data = data[0]
        nc.createVariable("lat", "f4", ("lat",))[:] = 50.875 - 0.25 * np.arange(data.shape[-2])
        nc.createVariable("lon", "f4", ("lon",))[:] = 10.125 + 0.25 * np.arange(data.shape[-1])
        v = nc.createVariable("v", dtype, ("lat", "lon") if time_units is None else ("time", "lat", "lon"))
        v.set_auto_maskandscale(False)
        for k, val in (enc or {}).items():
            setattr(v, k, val)
        for k, val in (attrs or {}).items():
            setattr(v, k, val)
        v[:] = data
    return path


def _cli(*args, limit=None):
    """Run ``smengine ARGS`` in a subprocess (optionally under a file-size limit, SIGXFSZ ignored)."""

    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, preexec_fn=preexec if limit else None, timeout=300
    )


def _one_error_line(res, *patterns):
    """Exit 1 and a single ``Error: ...`` line holding every pattern; no traceback, no crash."""
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "Segmentation" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    for p in patterns:
        assert p in errors[0], (p, errors[0])
    return errors[0]


def _mount_tmpfs(path, options):
    """Mount a tmpfs at ``path`` (needs root and a kernel that allows it); False if not possible."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return res.returncode == 0


def _umount(path):
    subprocess.run(["umount", str(path)], check=True)


# ==================================================================== 1. damaged GRIB
@pytest.mark.data
def test_valid_grib_walks_every_message_including_era5_padding(data_dir, tmp_path, era5):
    assert _check_grib_messages(data_dir / "gridded" / ERA5) == 744  # 744 hourly fields, NUL padding between
    assert _check_grib_messages(data_dir / "gridded" / H14) == 4
    # extra NUL bytes after the last message (a preallocated or block-padded copy) are padding too
    padded = tmp_path / "padded.grib"
    padded.write_bytes(era5 + b"\0" * 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = open_source(padded, daily="mean").load()
        b = open_source(data_dir / "gridded" / ERA5, daily="mean").load()
    np.testing.assert_array_equal(a, b)


@pytest.mark.data
@pytest.mark.parametrize(
    ("cut", "match"),
    [
        (500 * FRAME + 1000, r"truncated GRIB: message 501 at byte 1680000 is 3342 bytes long.*cut short"),
        (500 * FRAME + 3350, r"truncated GRIB: every message is NUL-padded.*message 501 at byte 1680000"),
        (500 * FRAME + 3342, r"truncated GRIB: every message is NUL-padded.*message 501 at byte 1680000"),
        (5, r"truncated GRIB: message 1 at byte 0 is cut inside its first section"),
    ],
    ids=["mid-message", "inside-padding", "at-message-end", "inside-section-0"],
)
def test_cut_grib_fails_naming_message_and_offset(tmp_path, era5, cut, match):
    cut_file = tmp_path / "era5_cut.grib"
    cut_file.write_bytes(era5[:cut])
    with pytest.raises(DataError, match=r"era5_cut\.grib: " + match):
        open_source(cut_file, daily="mean")


@pytest.mark.data
def test_grib_cut_on_a_message_boundary_reads_with_a_partial_day_warning(tmp_path, era5):
    # 500 whole frames (20 days and 20 hours): structurally a valid, shorter file; the short
    # last day is what shows, and it is not averaged silently
    cut_file = tmp_path / "era5_cut.grib"
    cut_file.write_bytes(era5[: 500 * FRAME])
    with pytest.warns(DataLossWarning, match=r"1 UTC day\(s\) have fewer time steps than the 24.*2019-03-21 \(20\)"):
        src = open_source(cut_file, daily="mean")
    assert src.n_times == 21


@pytest.mark.data
@pytest.mark.parametrize(
    ("offset", "patch", "match"),
    [
        (3338, b"XXXX", r"message 101 at byte 336000 does not end with '7777'"),  # end marker
        (4, b"\x00\x01\x00", r"message 101 at byte 336000 does not end with '7777' 256 bytes on"),  # length
        (8, b"\xff\xff\xff", r"message 101 at byte 336000: section 1 at byte 336008 states length 16777215"),
        (0, b"GRIX", r"3360 bytes of garbage at byte 336000, after message 100 \(which ends at byte 335982\)"),
        (100, b"\xff" * 40, r"cannot decode 't2m' \(corrupt GRIB\?\): InvalidBitsPerValueError"),  # packing header
    ],
    ids=["end-marker", "total-length", "section-length", "grib-marker", "packing-header"],
)
def test_grib_with_bytes_overwritten_inside_a_message_fails(tmp_path, era5, offset, patch, match):
    data = bytearray(era5)
    at = 100 * FRAME + offset  # inside message 101
    data[at : at + len(patch)] = patch
    bad = tmp_path / "era5_damaged.grib"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"era5_damaged\.grib: .*" + match):
        open_source(bad, daily="mean")


@pytest.mark.data
def test_grib_with_trailing_garbage_fails(tmp_path, era5):
    bad = tmp_path / "era5_tail.grib"
    bad.write_bytes(era5 + b"<html>proxy error</html>\n")
    with pytest.raises(
        DataError, match=r"era5_tail\.grib: corrupt GRIB: trailing garbage \(25 bytes\) at byte 2499840"
    ):
        open_source(bad, daily="mean")


@pytest.mark.data
def test_truncated_grib_is_a_one_line_cli_error(tmp_path, era5):
    cut_file = tmp_path / "era5_cut.grib"
    cut_file.write_bytes(era5[: 500 * FRAME + 1000])
    res = _cli("-q", "ingest", cut_file, "--daily", "mean", "--lonlat-bounds", "-4", "51", "1", "55", "--out", tmp_path)
    _one_error_line(res, "era5_cut.grib: truncated GRIB: message 501 at byte 1680000")
    assert not list(tmp_path.glob("*.h5"))


@pytest.mark.data
def test_grib2_messages_are_walked_by_their_sections(tmp_path, data_dir):
    eccodes = pytest.importorskip("eccodes")
    g2 = tmp_path / "era5_g2.grib2"
    with open(data_dir / "gridded" / ERA5, "rb") as f, open(g2, "wb") as out:
        for _ in range(48):
            h = eccodes.codes_grib_new_from_file(f)
            eccodes.codes_set(h, "edition", 2)
            eccodes.codes_write(h, out)
            eccodes.codes_release(h)
    assert _check_grib_messages(g2) == 48
    src = open_source(g2, daily="mean")
    assert src.n_times == 2 and src.units == "K"
    data = bytearray(g2.read_bytes())
    length = int.from_bytes(data[8:16], "big")
    data[length + 16 : length + 20] = b"\x00\x00\xff\xff"  # message 2, section 1's length
    (tmp_path / "bad.grib2").write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"corrupt GRIB: message 2 at byte {length}: section at byte {length + 16}"):
        open_source(tmp_path / "bad.grib2", daily="mean")
    (tmp_path / "cut.grib2").write_bytes(bytes(g2.read_bytes()[: 3 * length + 50]))
    with pytest.raises(DataError, match=rf"truncated GRIB: message 4 at byte {3 * length}"):
        open_source(tmp_path / "cut.grib2", daily="mean")


@pytest.mark.data
def test_large_grib1_message_over_8_mb_is_walked(tmp_path, data_dir):
    """ECMWF encodes the length of a GRIB 1 message over 8 MB in 120-byte units; ecCodes reads it."""
    eccodes = pytest.importorskip("eccodes")
    with open(data_dir / "gridded" / ERA5, "rb") as f:
        h = eccodes.codes_grib_new_from_file(f)
    ni, nj = 2400, 1801
    for key, value in (
        ("Ni", ni),
        ("Nj", nj),
        ("latitudeOfFirstGridPointInDegrees", 90.0),
        ("longitudeOfFirstGridPointInDegrees", 0.0),
        ("latitudeOfLastGridPointInDegrees", -90.0),
        ("longitudeOfLastGridPointInDegrees", 359.85),
        ("iDirectionIncrementInDegrees", 0.15),
        ("jDirectionIncrementInDegrees", 0.1),
        ("bitsPerValue", 24),
    ):
        eccodes.codes_set(h, key, value)
    eccodes.codes_set_values(h, 280.0 + np.random.default_rng(0).random(ni * nj))
    big = tmp_path / "large.grib"
    with open(big, "wb") as out:
        eccodes.codes_write(h, out)
    eccodes.codes_release(h)
    head = big.read_bytes()[:8]
    assert head[4] & 0x80 and big.stat().st_size > 8_388_607  # the large-message encoding
    assert _check_grib_messages(big) == 1
    big.write_bytes(big.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"large\.grib: .*(truncated|corrupt) GRIB: message 1 at byte 0"):
        _check_grib_messages(big)


# ==================================================================== 2. local-time NetCDF units
@pytest.mark.parametrize("units", ["days since 2020-01-01 00:00:00 +02:00", "days since 2020-01-01 00:00:00 +0200"])
def test_daily_values_of_local_days_are_refused(tmp_path, units):
    # each value covers a local day, 22:00 UTC to 22:00 UTC: truncating its UTC time to a day
    # (as before) put it on the previous UTC day, every day
    path = _nc(tmp_path / "local.nc", np.full((3, 4, 4), 0.2), attrs={"units": "m3 m-3"}, time_units=units)
    with pytest.raises(
        DataError,
        match=r"local\.nc: time units .* are local time \(UTC\+02:?00\).*straddles two UTC days.*2019-12-31T22:00",
    ):
        open_source(path)


@pytest.mark.parametrize(
    "units",
    [
        "days since 2020-01-01 00:00:00 UTC",
        "days since 2020-01-01T00:00:00Z",
        "days since 2020-01-01 00:00:00",
        "days since 2020-01-01 00:00:00 +00:00",
        "days since 2020-01-01 02:00:00 +02:00",  # local 02:00 is 00:00 UTC: local days that are UTC days
        "days since 2020-01-01",
    ],
)
def test_utc_days_read_on_their_days(tmp_path, units):
    path = _nc(tmp_path / "utc.nc", np.full((3, 4, 4), 0.2), attrs={"units": "m3 m-3"}, time_units=units)
    src = open_source(path)
    assert [str(d) for d in src.times] == ["2020-01-01", "2020-01-02", "2020-01-03"]


def test_hourly_local_time_is_aggregated_by_utc_day(tmp_path):
    hours = np.arange(48.0)  # local 2020-01-01 00:00 +02:00 … 2020-01-02 23:00 +02:00
    data = np.broadcast_to(hours[:, None, None], (48, 4, 4)).astype(np.float32) / 100.0
    path = _nc(
        tmp_path / "hourly.nc", data, attrs={"units": "m3 m-3"}, time_units="hours since 2020-01-01 00:00 +02:00"
    )
    with pytest.warns(DataLossWarning, match=r"2 UTC day\(s\) have fewer time steps than the 24.*2019-12-31 \(2\)"):
        src = open_source(path, daily="mean")
    assert [str(d) for d in src.times] == ["2019-12-31", "2020-01-01", "2020-01-02"]
    # UTC 2019-12-31 holds local hours 0 and 1; UTC 2020-01-01 local hours 2…25
    np.testing.assert_allclose(src.load()[:, 0, 0], [0.005, 0.135, 0.365], rtol=1e-5)


# ==================================================================== 3. plausible ranges
def test_out_of_range_and_infinite_values_become_nan_counted_and_warned(tmp_path):
    rng = np.random.default_rng(3)
    days = _daily_tifs(tmp_path / "s1", 2)
    bad = 0.5 * rng.random((80, 80))
    bad[5, 5], bad[6, 6], bad[7, 7], bad[8, 8] = 3.4e38, 1e6, -0.5, np.inf  # bit rot, nonsense, sign, inf
    _write_tif(days[1], bad, tags={"time": "2020-01-02"})
    out = tmp_path / "tiles"
    with pytest.warns(
        DataLossWarning,
        match=r"source 's1' .*s1_20200102\.tif.*: 4 of \d+ values read \(0\.0\d+ %\) outside \[0, 1\] "
        r"\(plausible for m3 m-3\) \(worst inf\) set to NaN",
    ) as rec:
        ingest([SourceSpec(days, name="s1")], _grid(), out)
    assert len(rec) == 1  # once per source, not per tile
    s = TileStore.open(out / "t000_000.h5")
    assert np.isnan(s.dynamic[1, 0][[5, 6, 7, 8], [5, 6, 7, 8]]).all()
    assert np.isfinite(s.dynamic[1, 0]).sum() == 1600 - 4 and np.isfinite(s.dynamic[0, 0]).all()


def test_more_than_the_limit_out_of_range_is_an_error_naming_file_and_day(tmp_path):
    days = _daily_tifs(tmp_path / "s1", 3)
    _write_tif(days[2], np.full((80, 80), 35.0), tags={"time": "2020-01-03"})  # % labelled m3 m-3
    with pytest.raises(
        DataError,
        match=r"s1_20200103\.tif: day 2020-01-03: (\d+) of \1 values read \(100 %\) outside \[0, 1\].*"
        r"more than 10% of the values — wrong units.*valid_range=",
    ):
        ingest([SourceSpec(days, name="s1")], _grid(), tmp_path / "tiles")
    assert not list((tmp_path / "tiles").glob(".*.tmp"))
    # the user's range and limit replace the defaults
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ingest([SourceSpec(days, name="s1", valid_range=(0, 100))], _grid(), tmp_path / "ok")
    _write_tif(days[2], np.where(np.eye(80) > 0, 35.0, 0.3), tags={"time": "2020-01-03"})  # 80 of 6400
    # (tiles read their windows with a margin of 2 cells: values there are counted by each read)
    with pytest.warns(DataLossWarning, match=r"\d+ of \d+ values read \(0\.\d+ %\) .*\(worst 35\)"):
        ingest([SourceSpec(days, name="s1")], _grid(), tmp_path / "few", overwrite=True)
    with pytest.raises(DataError, match=r"more than 0% of the values"):
        ingest([SourceSpec(days, name="s1", max_invalid_fraction=0.0)], _grid(), tmp_path / "strict")


def test_the_limit_is_a_module_constant_and_bad_specs_are_config_errors():
    assert MAX_INVALID_FRACTION == 0.1
    with pytest.raises(ConfigError, match="lo < hi"):
        SourceSpec("x.tif", valid_range=(1, 0))
    with pytest.raises(ConfigError, match=r"valid_range must be \(lo, hi\)"):
        SourceSpec("x.tif", valid_range="wide")
    with pytest.raises(ConfigError, match="max_invalid_fraction"):
        SourceSpec("x.tif", max_invalid_fraction=1.5)


def test_sources_read_whole_are_screened_when_opened(tmp_path):
    # a static NetCDF layer is held in memory: screened (and reported) at open
    data = np.full((1, 20, 20), 120.0)
    data[0, 0, :3] = [1e6, -1e9, 3.4e38]
    path = _nc(tmp_path / "elev.nc", data, attrs={"units": "m"}, time_units=None)
    with pytest.warns(DataLossWarning, match=r"3 of 400 values \(0\.75 %\) outside \[-11000, 9000\] .*worst 3\.4e\+38"):
        src = open_source(path)
    assert np.isnan(src.day(0)[0, :3]).all() and np.isfinite(src.day(0)[0, 3:]).all()
    # hourly values are screened before the daily aggregation: a bad hour does not spoil its day
    hourly = np.full((48, 4, 4), 280.0)
    hourly[5, 0, 0] = 3.4e38
    path = _nc(tmp_path / "t2m.nc", hourly, attrs={"units": "K"}, time_units="hours since 2020-01-01 00:00")
    with pytest.warns(DataLossWarning, match=r"1 of 768 values"):
        src = open_source(path, daily="mean")
    assert src.day(0)[0, 0] == pytest.approx(280.0)
    # "1" has no range, but infinity is still not a value
    inf = np.full((1, 20, 20), 7.0)
    inf[0, 1, 1] = -np.inf
    with pytest.warns(DataLossWarning, match=r"1 of 400 values .* outside the finite numbers"):
        open_source(_nc(tmp_path / "twi.nc", inf, attrs={"units": "1"}, time_units=None))


def test_a_files_valid_range_is_honoured(tmp_path):
    data = np.full((1, 20, 20), 0.3)
    data[0, 0, 0] = 0.6
    path = _nc(tmp_path / "vmax.nc", data, attrs={"units": "m3 m-3", "valid_min": 0.0, "valid_max": 0.5})
    with pytest.warns(DataLossWarning, match=r"1 of 400 values read .* outside \[0, 0\.5\] \(the file's valid range"):
        assert np.isnan(open_source(path).load()[0, 0, 0])
    # packed: valid_range in packed (int16) values, unpacked with scale_factor
    packed = np.full((1, 20, 20), 300, dtype=np.int16)
    packed[0, 0, 0] = 900  # 0.9 > valid_range 0.8
    path = _nc(
        tmp_path / "packed.nc",
        packed,
        attrs={"units": "m3 m-3", "valid_range": np.array([0, 800], np.int16)},
        dtype="i2",
        enc={"scale_factor": np.float32(0.001), "add_offset": np.float32(0.0)},
    )
    with pytest.warns(DataLossWarning, match=r"outside \[0, 0\.8\]"):
        day = open_source(path).load()[0]
    assert np.isnan(day[0, 0]) and day[0, 1] == pytest.approx(0.3)
    # a stated range that cannot hold the units' values at all: wrong units
    with pytest.raises(DataError, match=r"range \[200, 300\] is outside the plausible range of m3 m-3"):
        open_source(_nc(tmp_path / "k.nc", data, attrs={"units": "m3 m-3", "valid_range": np.array([200.0, 300.0])}))


def test_twin_files_ingest_without_warnings(tmp_path):
    from smengine.twin import TwinConfig, make_world

    world = make_world(3, tmp_path / "w", TwinConfig.quick(size_km=6, n_days=30, spinup_days=5, n_stations=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SMEngineWarning)
        opened = [open_source(spec) for spec in world.sources(era5=True)]
        ingest(opened, world.grid, tmp_path / "tiles")
    assert all(s.screen.n > 0 and s.screen.bad == 0 for s in opened)


@pytest.mark.data
def test_shared_real_data_read_without_warnings(data_dir):
    g = data_dir / "gridded"
    specs = [
        SourceSpec(g / "esa_cci_sm_v05.2/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv05.2.nc"),
        SourceSpec(sorted((g / "c3s_sm/daily_combined_TCDR_v201801").glob("*.nc"))),
        SourceSpec(g / "dem/pysheds_dem_hydrosheds3s_texas.tif", units="m"),
        SourceSpec(g / ERA5, daily="mean"),
        SourceSpec(g / H14),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SMEngineWarning)
        for spec in specs:
            src = open_source(spec)
            src.load()
            assert src.screen.n > 100_000 and src.screen.bad == 0, src.name


# ==================================================================== 4. missing units
@pytest.mark.parametrize("attrs", [None, {"units": ""}, {"units": "  "}], ids=["no-attribute", "empty", "blank"])
def test_a_variable_without_units_is_an_error_unless_units_are_given(tmp_path, attrs):
    path = _nc(tmp_path / "nounits.nc", np.full((2, 4, 4), 0.2), attrs=attrs)
    with pytest.raises(DataError, match=r"nounits\.nc: variable 'v': states no units.*pass units=.*--units NAME=UNITS"):
        open_source(path)
    assert open_source(path, units="m3 m-3").units == "m3 m-3"
    with pytest.raises(DataError, match="unknown units ''"):
        open_source(path, units="")


@pytest.mark.parametrize("stated", ["1", "-", "dimensionless"])
def test_dimensionless_variables_say_so(tmp_path, stated):
    assert open_source(_nc(tmp_path / "ndvi.nc", np.full((2, 4, 4), 0.4), attrs={"units": stated})).units == "1"


# ==================================================================== 5. source files changed in place
def _stats(path):
    return TileStore.open(path).attrs["file_stats"]


def test_a_source_file_replaced_in_place_is_noticed_and_redone(tmp_path, caplog):
    days = _daily_tifs(tmp_path / "s1", 3)
    elev = _write_tif(tmp_path / "elev.tif", np.arange(6400.0).reshape(80, 80), units="m")
    specs = [SourceSpec(days, name="s1"), SourceSpec(elev, name="elev")]
    out = tmp_path / "tiles"
    ingest(specs, _grid(), out)
    st = os.stat(days[1])
    assert _stats(out / "t000_000.h5")["s1"][str(days[1])] == [st.st_size, st.st_mtime_ns]
    assert set(_stats(out / "t000_000.h5")) == {"s1", "elev"}
    ingest(specs, _grid(), out)  # nothing changed: nothing redone, no warning
    # a reprocessed file under the same name
    _write_tif(days[1], np.full((80, 80), 0.11), tags={"time": "2020-01-02"})
    os.utime(days[1], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with pytest.warns(SMEngineWarning, match=r"layer 's1': source file\(s\) .*s1_20200102\.tif.* changed in place"):
        ingest(specs, _grid(), out)
    assert caplog.text.count("changed in place") == 4  # each tile is logged
    s = TileStore.open(out / "t000_000.h5")
    assert (s.dynamic[1, 0] == np.float32(0.11)).all()
    fresh = tmp_path / "fresh"
    ingest(specs, _grid(), fresh)
    for name in ("t000_000.h5", "t001_001.h5"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()


def test_a_tile_without_file_stats_keeps_the_old_behaviour(tmp_path):
    days = _daily_tifs(tmp_path / "s1", 2)
    out = tmp_path / "tiles"
    ingest([SourceSpec(days, name="s1")], _grid(), out)
    for tile in out.glob("*.h5"):  # as written before the stats were recorded
        with h5py.File(tile, "a") as h5:
            attrs = json.loads(h5.attrs["user_attrs"])
            del attrs["file_stats"]
            h5.attrs["user_attrs"] = json.dumps(attrs)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    _write_tif(days[0], np.full((80, 80), 0.11), tags={"time": "2020-01-01"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ingest([SourceSpec(days, name="s1")], _grid(), out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # up to date, as before


# ==================================================================== 6. output-side faults
def _sources(tmp_path):
    _daily_tifs(tmp_path / "src", 3)
    return f"s1={tmp_path / 'src'}/s1_*.tif"


def test_a_full_disk_is_one_error_line_and_leaves_no_file(tmp_path):
    out = tmp_path / "tiles"
    res = _cli("-q", "ingest", _sources(tmp_path), *BOX, "--out", out, limit=60_000)
    _one_error_line(res, f"{out / 't000_000.h5'}: cannot write the tile: File too large")
    assert os.listdir(out) == []  # no tile under its name, no temporary file
    # the same from Python: a DataError (an OSError) naming the tile
    code = (
        "import sys; from smengine.ingest import ingest, SourceSpec; from smengine.grid import Grid\n"
        "g = Grid.from_bounds(4_321_000, 2_980_000, 4_341_000, 3_000_000, tile_size=10)\n"
        f"files = sorted(__import__('glob').glob('{tmp_path}/src/*.tif'))\n"
        f"try:\n    ingest([SourceSpec(files, name='s1')], g, '{out}')\n"
        "except OSError as exc:\n    print(type(exc).__name__, exc); sys.exit(3)\n"
    )

    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=preexec, timeout=300)
    assert res.returncode == 3 and res.stdout.startswith("DataError ") and "t000_000.h5" in res.stdout, res
    assert os.listdir(out) == []


def test_a_full_tmpfs_is_one_error_line(tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the file-size limit test covers the write path")
    try:
        res = _cli("-q", "ingest", _sources(tmp_path), *BOX, "--out", mnt)
        _one_error_line(res, f"{mnt / 't000_000.h5'}: cannot write the tile: No space left on device")
        assert os.listdir(mnt) == []
    finally:
        _umount(mnt)


def test_a_read_only_output_folder_is_one_error_naming_it(tmp_path):
    ro = tmp_path / "ro"
    mounted = _mount_tmpfs(ro, "ro,size=64k")
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("running as root without mount: permissions do not stop root")
        ro.mkdir()
        ro.chmod(0o555)
    try:
        res = _cli("-q", "ingest", _sources(tmp_path), *BOX, "--out", ro)
        _one_error_line(res, f"{ro}: cannot write tiles there:")
        res = _cli("-q", "ingest", _sources(tmp_path), *BOX, "--out", ro / "sub")
        _one_error_line(res, f"{ro / 'sub'}: cannot make the tile folder:")
    finally:
        if mounted:
            _umount(ro)
        else:
            ro.chmod(0o755)


_HOLD = """
import os, signal, sys
import numpy as np
from smengine.grid import Grid
from smengine.tiles import TileWriter
g = Grid.from_bounds(4_321_000, 2_980_000, 4_341_000, 3_000_000, tile_size=10)
w = TileWriter(sys.argv[1], g.tile_grid("t000_000"), ["2020-01-01"], [], ["a"], {"a": "1"})
w.__enter__()
w.write_dynamic(0, "a", np.zeros(g.tile_grid("t000_000").subpixel_shape))
print(w._tmp, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # hold the file open until the parent closes stdin
"""


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(tmp_path, caplog):
    out = tmp_path / "tiles"
    out.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", _HOLD, str(out / "t000_000.h5"), "kill"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == -signal.SIGKILL
    left = out / os.path.basename(res.stdout.strip())
    assert left.exists() and left.name.startswith(".t000_000.h5.") and left.name.endswith(".tmp")
    old_style = out / ".t001_000.h5.k2_9xq0a.tmp"  # as tempfile.mkstemp named them before
    old_style.write_bytes(b"\x89HDF partial")
    keep = [out / ".notes.tmp", out / "t000_000.h5.tmp", out / "readme.txt"]
    for k in keep:
        k.write_text("not ours")
    with caplog.at_level("WARNING", logger="smengine.tiles"):
        ingest([SourceSpec(_daily_tifs(tmp_path / "s1", 1), name="s1")], _grid(), out)
    assert "removed 2 temporary tile file(s) left by an interrupted run" in caplog.text
    assert not left.exists() and not old_style.exists() and all(k.exists() for k in keep)
    assert sorted(p.name for p in out.glob("*.h5")) == ["t000_000.h5", "t000_001.h5", "t001_000.h5", "t001_001.h5"]


def test_a_live_writers_temporary_file_is_kept(tmp_path):
    out = tmp_path / "tiles"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out / "t000_000.h5"), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        live = out / os.path.basename(proc.stdout.readline().strip())
        assert live.exists()
        assert remove_stale_temps(out) == [] and live.exists()  # another process is writing it
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert remove_stale_temps(out) == [live] and not live.exists()  # its writer is gone


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_tiles_get_the_permissions_of_products(tmp_path, umask):
    old = os.umask(umask)
    try:
        ingest([SourceSpec(_daily_tifs(tmp_path / "s1", 1), name="s1")], _grid(), tmp_path / "tiles")
        atomic_write(tmp_path / "product.json", b"{}")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for p in [*(tmp_path / "tiles").glob("*.h5"), tmp_path / "product.json"]:
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))


def test_the_space_reserved_for_a_tile_covers_it(tmp_path):
    # the reservation must hold everything HDF5 writes (past it, a full disk could still hit
    # HDF5 mid-write); a tile with large attributes (thousands of source files) is the hard case
    tgrid = _grid().tile_grid("t000_000")
    files = {n: ";".join(f"/archive/product/v2/{n}/file_{k:05d}.nc" for k in range(3000)) for n in ("a", "c")}
    stats = {n: {f: [123456, 1_700_000_000_000_000_000] for f in files[n].split(";")} for n in files}
    writer = TileWriter(
        tmp_path / "t.h5",
        tgrid,
        np.datetime64("2020-01-01") + np.arange(30),
        [],
        ["a"],
        {"a": "1", "c": "1"},
        files,
        {"c": (np.zeros(tgrid.subpixel_shape, int), 5)},
        attrs={"file_stats": stats},
    )
    with writer as w:
        w.write_dynamic(3, "a", np.ones(tgrid.subpixel_shape))
    size = (tmp_path / "t.h5").stat().st_size
    assert 0 < size <= writer._reserved
    s = TileStore.open(tmp_path / "t.h5")  # trimmed back to what HDF5 wrote, still whole
    assert s.sources == files and (s.dynamic[3, 0] == 1).all() and s.covered("a")[3]


def test_a_source_overlapping_no_tile_and_tiles_without_source_are_warned(tmp_path):
    days = _daily_tifs(tmp_path / "s1")  # covers the 2 x 2 tiles of _grid() entirely
    far = _write_tif(tmp_path / "elev_far.tif", np.ones((8, 8)), Affine(250, 0, 5_321_000, 0, -250, 3_000_000), "m")
    with pytest.warns(DataLossWarning, match=r"1 source\(s\) overlap none of the 4 tile\(s\) and were left out: elev"):
        ingest([SourceSpec(days, name="s1"), SourceSpec(far, name="elev")], _grid(), tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").glob("*.h5")) == [
        "t000_000.h5",
        "t000_001.h5",
        "t001_000.h5",
        "t001_001.h5",
    ]
    assert "elev" not in TileStore.open(tmp_path / "a" / "t000_000.h5").feature_names
    # a source covering the first tile only: the other three get no file, and that is said
    corner = _write_tif(tmp_path / "corner.tif", np.full((40, 40), 0.3))
    with pytest.warns(DataLossWarning, match=r"3 of 4 tile\(s\) overlap no source and got no tile file: t000_001"):
        written = ingest([SourceSpec(corner, name="sm")], _grid(), tmp_path / "b")
    assert [p.name for p in written] == ["t000_000.h5"]
