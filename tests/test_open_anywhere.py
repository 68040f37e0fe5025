"""The product opens anywhere: fresh interpreters, plain xarray, any import order.

ecCodes' Python binding from 2.43 on preloads eckitlib with ``RTLD_GLOBAL``, and eckitlib
bundles a second PROJ that then serves pyproj and rasterio as well: a plain
``xr.open_dataset`` (xarray imports cfgrib's backend to guess the engine) aborted with a
double free, and ``pyproj.CRS`` failed after ``import eccodes``. The ``grib`` extra pins a
binding without a PROJ of its own. Each case runs in a fresh interpreter that never imports
smengine, because import order is the whole question.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from smengine.grid import Grid
from smengine.product import make_product, write_netcdf


@pytest.fixture(scope="module")
def product_nc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    grid = Grid(resolution=1000.0, xmin=4_300_000.0, ymax=3_100_000.0, width=5, height=4)
    rng = np.random.default_rng(0)
    shape = (3, 4, 5)
    sm = rng.uniform(0.1, 0.4, shape).astype(np.float32)
    zeros = np.zeros(shape, np.float32)
    ds = make_product(
        sm,
        zeros,
        zeros,
        np.ones(shape, np.float32),
        np.zeros(shape, np.uint8),
        grid=grid,
        times=np.arange("2021-04-01", "2021-04-04", dtype="datetime64[D]"),
    )
    path = tmp_path_factory.mktemp("open") / "product.nc"
    write_netcdf(ds, path)
    return path


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


OPEN = "ds = xr.open_dataset({p!r}); ds.load(); assert float(ds['sm'].max()) > 0.1; print('ok')"
CRS = "assert pyproj.CRS(3035).to_epsg() == 3035; print('ok')"
RIO = "ds = xr.open_dataset({p!r}); assert ds.rio.crs.to_epsg() == 3035 and ds.rio.transform().a == 1000; print('ok')"

CASES = {
    "xarray-open": ("import xarray as xr\n" + OPEN, False),
    "eccodes-then-pyproj": ("import eccodes, pyproj\n" + CRS, True),
    "pyproj-then-eccodes": ("import pyproj, eccodes\n" + CRS, True),
    "eccodes-then-xarray-open": ("import eccodes\nimport xarray as xr\n" + OPEN, True),
    "cfgrib-then-rasterio-crs": (
        "import cfgrib, rasterio.crs\nassert rasterio.crs.CRS.from_epsg(3035).to_epsg() == 3035; print('ok')",
        True,
    ),
    "rioxarray-crs": ("import rioxarray, xarray as xr\n" + RIO, False),
    "eccodes-then-rioxarray-crs": ("import eccodes, rioxarray, xarray as xr\n" + RIO, True),
    "rioxarray-then-eccodes-crs": ("import rioxarray, xarray as xr, eccodes\n" + RIO, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fresh_interpreter(case: str, product_nc: Path) -> None:
    code, needs_grib = CASES[case]
    if needs_grib:
        pytest.importorskip("eccodes", reason="the grib extra is not installed")
    if "rioxarray" in code:
        pytest.importorskip("rioxarray")
    r = _run(code.format(p=str(product_nc)))
    assert r.returncode == 0 and r.stdout.strip() == "ok", f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-2000:]}"
    assert "PROJ" not in r.stderr, r.stderr


def test_fresh_interpreter_check_can_fail(product_nc: Path) -> None:
    r = _run("import sys; sys.exit(134)")
    assert r.returncode == 134
    r = _run(("import xarray as xr\n" + OPEN).format(p=str(product_nc.with_name("missing.nc"))))
    assert r.returncode != 0
