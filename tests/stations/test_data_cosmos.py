"""Footprint physics against the COSMOS-Europe network's own footprint products (real data)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from smengine import footprint as fp

pytestmark = pytest.mark.data


def test_d86_consistent_with_cosmos_europe_mean_footprint_depth(data_dir):
    """Per station, D86 at the mean soil moisture vs the network's mean hourly footprint depth.

    COSMOS-Europe computes D86(SM + LW, ρ_b, r = 1) hourly (SCIENCE.md §5.3, lattice water
    added gravimetrically) and publishes its mean. D86 is non-linear in θ, so the two are
    not identical; a unit or convention error (cm vs m, ρ_b misuse) would be off by far more.
    """
    path = data_dir / "crns" / "cosmos_europe_metadata" / "Additional_information.csv"
    rel = []
    with open(path, encoding="latin-1") as f:
        for row in csv.DictReader(f):
            try:
                rho = float(row["Bulkdensity"])
                sm = float(row["Mean soil moisture(m3/m3)"])
                lw = float(row["Lattice water(g/g)"])
                depth_cm = 100.0 * float(row["Mean Footprint depth(m)"])
            except ValueError:  # '-' for unknown
                continue
            ours = float(fp.penetration_depth(1.0, rho, sm, lattice_water=lw / rho))
            rel.append(ours / depth_cm - 1.0)
    rel = np.abs(np.array(rel))
    assert rel.size >= 60
    assert np.median(rel) < 0.10
    assert np.mean(rel < 0.20) >= 0.8
