"""smengine.units and the engine's units check: a model feature's units against its tile layer's (issue 20).

A tile layer ingested in ``m`` (ERA5 precipitation) through a model trained on ``mm`` used to
give soil moisture off by 0.08 without a word. Now convertible units are converted in the
gather (with a warning), the others raise, and features without units are named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from smengine.engine import TileRunner
from smengine.errors import DataError, SMEngineWarning
from smengine.features import FeatureBuilder, FeatureSpec
from smengine.grid import Grid
from smengine.model import CompiledForest, ModelCard
from smengine.testing import naive_predict
from smengine.tiles import TileStore, TileWriter
from smengine.units import CONVERSIONS, VOCABULARY, conversion

DAYS = np.arange("2021-03-01", "2021-03-09", dtype="datetime64[D]")


# --------------------------------------------------------------------------- the table
@pytest.mark.parametrize(
    "a,b,want",
    [
        ("m", "mm", (1000.0, 0.0)),
        ("mm", "m", (0.001, 0.0)),
        ("K", "degC", (1.0, -273.15)),
        ("degC", "K", (1.0, 273.15)),
        ("Pa", "hPa", (0.01, 0.0)),
        ("hPa", "Pa", (100.0, 0.0)),
        ("mm", "mm", (1.0, 0.0)),
        ("m3 m-3", " m3 m-3 ", (1.0, 0.0)),
        ("furlongs", "furlongs", (1.0, 0.0)),  # identical strings need no vocabulary
    ],
)
def test_conversion_values(a, b, want):
    got = conversion(a, b)
    assert got == want and all(type(v) is float for v in got)


def test_every_vocabulary_pair_converts_or_raises_and_round_trips():
    for a in VOCABULARY:
        for b in VOCABULARY:
            try:
                sa, oa = conversion(a, b)
            except DataError as exc:
                assert a != b and (a, b) not in CONVERSIONS
                assert repr(a) in str(exc) and repr(b) in str(exc)
                continue
            sb, ob = conversion(b, a)
            x = np.array([-3.5, 0.0, 1.0, 287.4])
            np.testing.assert_allclose((x * sa + oa) * sb + ob, x, rtol=1e-14, atol=1e-12)


def test_table_agrees_with_cf_units():
    cf_units = pytest.importorskip("cf_units")
    for (a, b), (scale, offset) in CONVERSIONS.items():
        ua, ub = cf_units.Unit(a), cf_units.Unit(b)
        assert ua.convert(0.0, ub) == pytest.approx(offset, abs=1e-12)
        assert ua.convert(1.0, ub) - ua.convert(0.0, ub) == pytest.approx(scale, rel=1e-12)
    # UDUNITS would "convert" percent (of saturation) to volumetric water: our table refuses
    assert cf_units.Unit("%").is_convertible(cf_units.Unit("m3 m-3"))


@pytest.mark.parametrize(
    "a,b,why",
    [
        ("%", "m3 m-3", "percent of saturation is not volumetric"),
        ("m3 m-3", "%", "percent of saturation is not volumetric"),
        ("dB", "1", "logarithmic"),
        ("m", "K", "different quantities"),
        ("kg m-2", "mm", "not in the tile units vocabulary"),
    ],
)
def test_conversion_refused(a, b, why):
    with pytest.raises(DataError, match=why) as exc:
        conversion(a, b, where="t.h5: layer 'x'")
    msg = str(exc.value)
    assert msg.startswith("t.h5: layer 'x': ") and repr(a) in msg and repr(b) in msg
    assert isinstance(exc.value, OSError)  # DataError's builtin


# --------------------------------------------------------------------------- the engine
UNITS_MODEL = {"t2m": "degC", "tp": "mm", "sm": "m3 m-3", "ps": "hPa"}
UNITS_OTHER = {"t2m": "K", "tp": "m", "sm": "m3 m-3", "ps": "Pa"}
TO_MODEL = {"t2m": (1.0, -273.15), "tp": (1000.0, 0.0), "sm": (1.0, 0.0), "ps": (0.01, 0.0)}


def write_tile(path: Path, layers: dict[str, np.ndarray], units: dict[str, str], index: np.ndarray) -> TileStore:
    """A 5 × 4-pixel tile: static t2m, dynamic tp and sm, coarse ps (a tests/test_engine.py make_tile)."""
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_326_000, 2_991_000, tile_size=100)
    with TileWriter(path, grid, DAYS, ["t2m"], ["tp", "sm"], units, coarse={"ps": (index, layers["ps"].shape[1])}) as w:
        w.write_static("t2m", layers["t2m"])
        for t in range(DAYS.size):
            w.write_dynamic(t, "tp", layers["tp"][t])
            w.write_dynamic(t, "sm", layers["sm"][t])
            w.write_coarse(t, "ps", layers["ps"][t])
    return TileStore.open(path)


def _to(v: np.ndarray, ab: tuple[float, float]) -> np.ndarray:
    """What an ingest into the other units would store: float64 arithmetic rounded to float32."""
    return (v.astype(np.float64) * ab[0] + ab[1]).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("units")
    rng = np.random.default_rng(11)
    ny, nx = 16, 20
    index = (np.arange(ny)[:, None] // 8) * 3 + np.arange(nx)[None, :] // 8
    other = {
        "t2m": (280.0 + 15.0 * rng.random((ny, nx))).astype(np.float32),
        "tp": (0.01 * rng.random((DAYS.size, ny, nx)) ** 3).astype(np.float32),  # m of water a day
        "sm": (0.1 + 0.3 * rng.random((DAYS.size, ny, nx))).astype(np.float32),
        "ps": (95_000.0 + 5_000.0 * rng.random((DAYS.size, int(index.max()) + 1))).astype(np.float32),
    }
    other["tp"][rng.random(other["tp"].shape) < 0.15] = np.nan
    model_units = {k: _to(v, TO_MODEL[k]) for k, v in other.items()}
    st_model = write_tile(tmp / "model_units.h5", model_units, UNITS_MODEL, index)
    st_other = write_tile(tmp / "other_units.h5", other, UNITS_OTHER, index)
    fb = FeatureBuilder(st_model, FeatureSpec(swi_of=("tp", "sm"), swi_T=(3.0, 10.0), swi_carry=False))
    sw = fb.swi()
    X = np.concatenate([fb.day(t, swi=sw).reshape(len(fb.names), -1).T for t in range(DAYS.size)])
    ok = np.isfinite(X).all(1)
    z = (X[ok] - X[ok].mean(0)) / (X[ok].std(0) + 1e-9)
    y = 0.25 + 0.1 * np.tanh(z @ rng.standard_normal(len(fb.names)))
    rf = RandomForestRegressor(12, min_samples_leaf=3, random_state=0, n_jobs=1).fit(X[ok], y)
    features = [{"name": n, "units": fb.units[n], "kind": fb.kinds[n], "source": None} for n in fb.names]
    assert {"tp", "swi3_tp", "t2m", "ps", "doy_sin"} <= set(fb.names)
    return {
        "model": st_model,
        "other": st_other,
        "rf": rf,
        "names": fb.names,
        "features": features,
        "units": dict(fb.units),
        "tmp": tmp,
        "index": index,
        "layers": other,
    }


def _cf(world, features=None, card="dict"):
    feats = world["features"] if features is None else features
    if card == "dict":
        c = {"features": feats}
    else:
        c = ModelCard(
            features=feats,
            target={"name": "target", "units": "m3 m-3"},
            stations=["A"],
            period=["2021-03-01", "2021-03-08"],
            n_samples=1,
            n_dropped={"total": 0},
            hyperparameters={},
            search=[],
            cv={},
            site_metrics={},
            oob_score=None,
            oob_metrics={},
            versions={},
            content_hash="sha256:0",
        )
    return CompiledForest.from_sklearn(world["rf"], feature_names=world["names"], card=c)


KEYS = ("sm", "subpixel_sd", "uncertainty", "valid_fraction")


@pytest.mark.parametrize("card", ["dict", "ModelCard"])
def test_model_in_mm_on_a_tile_in_m_gives_the_product_of_the_tile_in_mm(world, card, caplog):
    cf = _cf(world, card=card)
    same = TileRunner(world["model"], cf).predict_arrays()[1]  # units equal: silent
    with pytest.warns(SMEngineWarning) as rec, caplog.at_level("INFO", logger="smengine.engine"):
        r = TileRunner(world["other"], cf, chunk_days=3)
    said = " | ".join(str(w.message) for w in rec)
    for feat, a, b in (("tp", "m", "mm"), ("t2m", "K", "degC"), ("ps", "Pa", "hPa")):
        assert f"tile layer {feat!r} in {a!r} converted to the model's {b!r}" in said
    assert "sm" not in {w.message.args[0].split("'")[1] for w in rec}  # m3 m-3 both: nothing to say
    assert "converted from 'm' to 'mm'" in caplog.text and "other_units.h5" in caplog.text
    conv = r.predict_arrays()[1]
    np.testing.assert_array_equal(conv["quality_flag"], same["quality_flag"])
    for k in KEYS:
        np.testing.assert_allclose(conv[k], same[k], rtol=0, atol=1e-6, err_msg=k)
    assert np.isfinite(same["sm"]).mean() > 0.5
    # without the conversion the product would be off: the check is not vacuous
    bare = TileRunner(world["other"], CompiledForest.from_sklearn(world["rf"], feature_names=world["names"]))
    assert np.nanmax(np.abs(bare.predict_arrays()[1]["sm"] - same["sm"])) > 1e-3


def test_naive_reference_converts_as_the_engine(world):
    cf = _cf(world)
    with pytest.warns(SMEngineWarning, match="converted"):
        out = TileRunner(world["other"], cf).predict_arrays(DAYS[1:])[1]
    ref = naive_predict(world["other"], world["rf"], world["names"], days=DAYS[1:], units=world["units"])
    direct = naive_predict(world["model"], world["rf"], world["names"], days=DAYS[1:])
    for r in (ref, direct):
        np.testing.assert_array_equal(out["quality_flag"], r["quality_flag"])
        for k in KEYS:
            np.testing.assert_allclose(out[k], r[k], rtol=0, atol=1e-6, err_msg=k)


def test_the_conversion_warning_is_said_once_per_forest(world):
    cf = _cf(world)
    with pytest.warns(SMEngineWarning, match="converted"):
        TileRunner(world["other"], cf)
    TileRunner(world["other"], cf)  # the same forest (a run over many tiles): silent (warnings are errors here)


def test_percent_on_a_model_in_m3_m3_raises_naming_layer_units_and_model(world):
    layers = dict(world["layers"])
    layers["sm"] = (100 * layers["sm"] / 0.45).astype(np.float32)  # percent of saturation
    p = world["tmp"] / "percent.h5"
    st = write_tile(p, layers, {**UNITS_OTHER, "sm": "%"}, world["index"])
    cf = _cf(world)
    with pytest.raises(DataError) as exc:
        TileRunner(st, cf)
    msg = str(exc.value)
    for part in (str(p), "tile layer 'sm'", "'%'", "'m3 m-3'", cf.content_hash[:19], "not volumetric"):
        assert part in msg, (part, msg)


def test_a_model_without_units_says_which_features_were_not_checked(world):
    no_units = [{**f, "units": None} if f["name"] in ("tp", "swi3_tp", "swi10_tp") else f for f in world["features"]]
    cf = _cf(world, no_units)
    with pytest.warns(SMEngineWarning) as rec:
        r = TileRunner(world["model"], cf)
    [w] = [w for w in rec if "not checked" in str(w.message)]
    assert "['tp', 'swi3_tp', 'swi10_tp']" in str(w.message)
    r.predict_arrays()
    TileRunner(world["model"], cf)  # once per forest


def test_a_forest_without_a_card_is_not_checked_and_logs_it(world, caplog):
    cf = CompiledForest.from_sklearn(world["rf"], feature_names=world["names"])
    with caplog.at_level("WARNING", logger="smengine.engine"):
        TileRunner(world["other"], cf)  # no SMEngineWarning: models built in code often have no card
    assert "no model card with feature units" in caplog.text


def test_conflicting_units_for_one_layer_raise(world):
    feats = [{**f, "units": "m"} if f["name"] == "swi3_tp" else f for f in world["features"]]  # tp in mm
    with pytest.raises(DataError, match=r"gives tile layer 'tp' two units"):
        TileRunner(world["model"], _cf(world, feats))


def test_tile_arrays_check_the_conversion_shapes():
    from smengine._ext import _engine

    static = np.zeros((1, 8, 8), np.float32)
    dynamic = np.zeros((2, 1, 8, 8), np.float32)
    cindex, coff, plan = np.zeros((0, 8, 8), np.int32), np.zeros(0, np.int64), np.zeros((3, 3), np.int32)
    _engine.TileArrays(static, dynamic, cindex, coff, plan, 4, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="scale and offset"):
        _engine.TileArrays(static, dynamic, cindex, coff, plan, 4, np.ones(2), np.zeros(3))
