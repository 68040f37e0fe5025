"""smengine.grid.Grid: EEA alignment, transforms, sub-pixels, tiles, config."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyproj import Transformer

from smengine.errors import ConfigError
from smengine.grid import Grid


@pytest.fixture
def grid():
    return Grid.from_bounds(4_321_400, 2_987_200, 4_545_100, 3_100_000, tile_size=100)


def test_from_bounds_snaps_outward_to_the_eea_reference_grid(grid):
    assert grid.crs == "EPSG:3035" and grid.resolution == 1000.0 and grid.subpixel == 4
    assert grid.bounds == (4_321_000.0, 2_987_000.0, 4_546_000.0, 3_100_000.0)
    assert grid.shape == (113, 225)
    assert grid.subpixel_shape == (452, 900)
    assert grid.subpixel_resolution == 250.0
    for v in grid.bounds:
        assert v % 1000 == 0


def test_unaligned_grid_starts_where_asked():
    g = Grid.from_bounds(100.5, 0.0, 3100.0, 2000.0, crs="EPSG:32632", resolution=1000.0, align=False)
    assert g.bounds == (100.5, 0.0, 3100.5, 2000.0)


def test_laea_origin_is_pixel_corner():
    # EPSG:3035 maps (10 E, 52 N) to (4 321 000, 3 210 000) exactly: a pixel corner
    g = Grid.from_bounds(4_300_000, 3_200_000, 4_340_000, 3_220_000)
    r, c = g.lonlat_to_rowcol(10.0, 52.0)
    x, y = g.xy(r, c)
    assert (x - 500.0, y + 500.0) == pytest.approx((4_321_000.0, 3_210_000.0), abs=1e-6)
    # the sub-pixel containing the point is the first sub-pixel of that pixel
    rs, cs = g.lonlat_to_rowcol(10.0, 52.0, subpixel=True)
    assert (rs // 4, cs // 4) == (r, c) and (rs % 4, cs % 4) == (0, 0)


def test_xy_rowcol_roundtrip_and_subpixel_nesting(grid):
    rng = np.random.default_rng(0)
    r = rng.integers(0, grid.height, 200)
    c = rng.integers(0, grid.width, 200)
    x, y = grid.xy(r, c)
    r2, c2 = grid.rowcol(x, y)
    np.testing.assert_array_equal(r2, r)
    np.testing.assert_array_equal(c2, c)
    rs, cs = grid.rowcol(x, y, subpixel=True)
    np.testing.assert_array_equal(rs // 4, r)
    np.testing.assert_array_equal(cs // 4, c)
    xs, ys = grid.xy(rs, cs, subpixel=True)
    assert np.all(np.abs(xs - x) < 500) and np.all(np.abs(ys - y) < 500)
    # agrees with pyproj for lon/lat
    lon, lat = Transformer.from_crs(3035, 4326, always_xy=True).transform(x, y)
    r3, c3 = grid.lonlat_to_rowcol(lon, lat)
    np.testing.assert_array_equal(r3, r)
    assert grid.contains(r, c).all() and not grid.contains(-1, 0) and not grid.contains(0, grid.width)


def test_tiles_partition_the_grid(grid):
    tiles = list(grid.tiles())
    assert grid.tile_shape == (2, 3)
    assert [t.id for t in tiles][:3] == ["t000_000", "t000_001", "t000_002"]
    cover = np.zeros(grid.shape, int)
    for t in tiles:
        cover[t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width] += 1
    assert (cover == 1).all()
    last = grid.tile("t001_002")
    assert (last.height, last.width) == (13, 25)
    tg = grid.tile_grid(last)
    assert tg.shape == (13, 25)
    # the tile's sub-pixel (0, 0) is the parent's sub-pixel at the tile offset
    x, y = tg.xy(0, 0, subpixel=True)
    assert grid.rowcol(x, y, subpixel=True) == (last.row_off * 4, last.col_off * 4)


def test_config_roundtrip_equality_and_hash(grid):
    cfg = grid.get_config()
    assert Grid.from_config(cfg) == grid
    assert Grid.from_config(json.dumps(cfg)) == grid
    assert hash(Grid.from_config(cfg)) == hash(grid)
    assert "EPSG:3035" in repr(grid)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crs": "EPSG:4326"}, "not projected"),
        ({"crs": "EPSG:999999"}, "unknown CRS"),
        ({"resolution": 0.0}, "resolution"),
        ({"subpixel": 0}, "subpixel"),
        ({"tile_size": 2.5}, "tile_size"),
    ],
)
def test_bad_grids(kwargs, match):
    args = {"crs": "EPSG:3035", "resolution": 1000.0, "xmin": 0.0, "ymax": 0.0, "width": 2, "height": 2}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        Grid(**args)


def test_bad_tile_ids(grid):
    with pytest.raises(ConfigError):
        grid.tile("nonsense")
    with pytest.raises(ConfigError):
        grid.tile(5, 0)
    with pytest.raises(ConfigError, match="unknown keys"):
        Grid.from_config({"crs": "EPSG:3035", "bogus": 1})
