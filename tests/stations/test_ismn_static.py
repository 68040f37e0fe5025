"""ISMN static variables (``*_static_variables.csv``) in :func:`read_ismn`."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from smengine import stations as S
from smengine.errors import DataError, DataLossWarning
from smengine.stations.readers.ismn import read_ismn, read_ismn_static

HEAD = (
    "quantity_name;unit;depth_from[m];depth_to[m];value;description;quantity_source_name;"
    "quantity_source_description;quantity_source_provider;quantity_source_version;"
    "quantity_source_resolution;quantity_source_timerange;quantity_source_url;"
)
HWSD = (
    'HWSD;Harmonized World Soil Database v1.1  by IIASA;IIASA;v1.1;30";;'
    "http://webarchive.iiasa.ac.at/Research/LUC/External-World-soil-database/HTML/;"
)
CCI = "ESA CCI Land Cover;ESA;{y}-v1.6.1;300m;{r};http://www.esa-landcover-cci.org/;"
KG = (
    "koeppen_geiger_2007;Koeppen-Geiger Climate Classification;;Peel2007;0.1°;;"
    "http://www.hydrol-earth-syst-sci.net/11/1633/2007/;"
)


def _static(lc_code: int, lc_text: str, clay: tuple[str, str] = ("23.00", "29.00")) -> str:
    lines = [HEAD]
    for d0, d1, sat, cl, oc, sa, si in (
        ("0.00", "0.30", "0.46", clay[0], "1.27", "36.00", "41.00"),
        ("0.30", "1.00", "0.44", clay[1], "0.57", "29.00", "42.00"),
    ):
        lines += [
            f"saturation;m^3*m^-3;{d0};{d1};{sat};;{HWSD}",
            f"clay fraction;% weight;{d0};{d1};{cl};;{HWSD}",
            f"organic carbon;% weight;{d0};{d1};{oc};;{HWSD}",
            f"sand fraction;% weight;{d0};{d1};{sa};;{HWSD}",
            f"silt fraction;% weight;{d0};{d1};{si};;{HWSD}",
        ]
    lines.append("organic carbon;% weight;-99.90;-99.90;0.59;;insitu;in situ;;;;;;")
    # epochs deliberately out of order: the most recent (2010) wins, not the last line
    for y, r in (("2000", "1998-2002"), ("2010", "2008-2012"), ("2005", "2003-2007")):
        code = lc_code if y == "2010" else 10
        text = lc_text if y == "2010" else "Cropland, rainfed"
        lines.append(f"land cover classification;;;;{code};{text};CCI_landcover_{y};" + CCI.format(y=y, r=r))
    lines.append(f"climate classification;;;;Cfa;Temperate - Without dry season - Hot Summer;{KG}")
    lines.append("field capacity;m^3*m^-3;0.00;0.30;0.31;;somewhere;;;;;;;")
    return "\n".join(lines) + "\n"


def _stm(network: str, station: str, nl: str = "\n") -> str:
    head = f"CSE {network:<10} {station:<16} 35.20000 -97.48000 345.00 0.05 0.05 Hydraprobe"
    body = ["2020/01/01 00:00 0.2000 G M", "2020/01/01 01:00 0.2100 G M", "2020/01/01 02:00 0.2200 D02 M"]
    return nl.join([head, *body]) + nl


def _station(root: Path, network: str, station: str, static: str | None) -> Path:
    d = root / network / station
    d.mkdir(parents=True)
    f = d / f"{network}_{network}_{station}_sm_0.050000_0.050000_Hydraprobe_20200101_20200101.stm"
    f.write_text(_stm(network, station))
    if static is not None:
        (d / f"{network}_{network}_{station}_static_variables.csv").write_text(static, encoding="utf-8")
    return f


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ismn"
    _station(root, "COSMOS", "ARM-1", _static(130, "Grassland"))
    _station(root, "COSMOS", "Fort-Peck", _static(70, "Tree cover, needleleaved, evergreen, closed to open (>15%)"))
    _station(root, "COSMOS", "Bare", None)
    return root


def test_read_ismn_static_values_and_units(tree: Path) -> None:
    v, u = read_ismn_static(tree / "COSMOS" / "ARM-1" / "COSMOS_COSMOS_ARM-1_static_variables.csv")
    assert v["clay_fraction"] == 23.0 and v["sand_fraction"] == 36.0 and v["silt_fraction"] == 41.0
    assert v["organic_carbon"] == 1.27 and v["organic_carbon_insitu"] == 0.59
    assert v["saturation"] == 0.46
    assert v["texture_depth"] == "0-0.3 m" and v["texture_source"] == "HWSD"
    assert v["land_cover_code"] == 130 and isinstance(v["land_cover_code"], int)
    assert v["land_cover"] == "Grassland" and v["land_cover_source"] == "CCI_landcover_2010"
    assert v["climate_class"] == "Cfa"
    assert v["climate_description"] == "Temperate - Without dry season - Hot Summer"
    assert v["field_capacity"] == 0.31  # unknown quantity kept, snake case
    assert u["saturation"] == "m3 m-3" and u["field_capacity"] == "m3 m-3"
    assert u["clay_fraction"] == "% weight" and u["organic_carbon_insitu"] == "% weight"
    assert "land_cover_code" not in u and "climate_class" not in u


def test_read_ismn_static_prefers_insitu_top_layer(tmp_path: Path) -> None:
    f = tmp_path / "X_X_s_static_variables.csv"
    f.write_text(
        "\n".join(
            [
                HEAD,
                f"clay fraction;% weight;0.00;0.30;23.00;;{HWSD}",
                "clay fraction;% weight;0.00;0.10;17.50;;insitu;in situ;;;;;;",
                f"saturation;m^3*m^-3;0.00;0.30;0.46;;{HWSD}",
                f"saturation;m^3*m^-3;0.30;1.00;0.44;;{HWSD}",
            ]
        )
        + "\n"
    )
    v, _ = read_ismn_static(f)
    assert v["clay_fraction"] == 17.5 and v["clay_fraction_insitu"] == 17.5 and v["saturation"] == 0.46
    assert v["texture_depth"] == "saturation: 0-0.3 m; clay_fraction: 0-0.1 m"
    assert v["texture_source"] == "saturation: HWSD; clay_fraction: insitu"
    assert "land_cover_code" not in v and "climate_class" not in v
    stm = tmp_path / "X_X_s_sm_0.050000_0.050000_Hydraprobe_20200101_20200101.stm"
    stm.write_text(_stm("X", "s"))
    st = read_ismn(stm)["X.s.0.05-0.05"]
    assert st.porosity == 0.46 and st.land_cover == ""
    assert st.processing[-1] == (
        "ISMN static variables from X_X_s_static_variables.csv; porosity 0.46 m3 m-3 from HWSD saturation (0-0.3 m)"
    )


def test_read_ismn_attaches_static(tree: Path) -> None:
    ss = read_ismn(tree)
    assert len(ss) == 3 and ss.exclusions.empty
    st = ss["COSMOS.ARM-1.0.05-0.05"]
    assert st.static["clay_fraction"] == 23.0 and st.static["land_cover_code"] == 130
    assert st.static_units["saturation"] == "m3 m-3"
    assert st.land_cover == "Grassland"
    assert st.porosity == 0.46
    note = st.processing[-1]
    assert "COSMOS_COSMOS_ARM-1_static_variables.csv" in note and "HWSD saturation" in note
    fp = ss["COSMOS.Fort-Peck.0.05-0.05"]
    assert fp.static["land_cover_code"] == 70
    assert fp.land_cover == "Tree cover, needleleaved, evergreen, closed to open (>15%)"
    bare = ss["COSMOS.Bare.0.05-0.05"]
    assert bare.static == {} and bare.static_units == {}
    assert bare.land_cover == "" and math.isnan(bare.porosity)
    assert not any("static" in p for p in bare.processing)
    # the series itself is unchanged by the static file
    assert st.data["sm"].tolist() == bare.data["sm"].tolist() == [0.2, 0.21, 0.22]


def test_metadata_columns(tree: Path) -> None:
    meta = S.open_stations(tree, "ismn").metadata()
    for col in (
        "clay_fraction",
        "sand_fraction",
        "silt_fraction",
        "organic_carbon",
        "organic_carbon_insitu",
        "saturation",
        "land_cover_code",
        "climate_class",
        "climate_description",
        "texture_depth",
    ):
        assert col in meta.columns, col
    row = meta.loc["COSMOS.ARM-1.0.05-0.05"]
    assert (row["clay_fraction"], row["sand_fraction"], row["organic_carbon"]) == (23.0, 36.0, 1.27)
    assert (row["organic_carbon_insitu"], row["saturation"], row["porosity"]) == (0.59, 0.46, 0.46)
    assert (row["land_cover_code"], row["land_cover"], row["climate_class"]) == (130, "Grassland", "Cfa")
    assert meta.loc["COSMOS.Fort-Peck.0.05-0.05", "land_cover_code"] == 70
    assert math.isnan(meta.loc["COSMOS.Bare.0.05-0.05", "clay_fraction"])


def test_single_stm_file_finds_static_beside_it(tree: Path) -> None:
    f = next((tree / "COSMOS" / "ARM-1").glob("*.stm"))
    for ss in (read_ismn(f), S.open_stations(f)):
        assert ss["COSMOS.ARM-1.0.05-0.05"].static["climate_class"] == "Cfa"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("unit;depth_from[m];value;\nclay fraction;% weight;0.0;23;\n", "lacks 'quantity_name'"),
        ("quantity_name;unit;depth_from[m];\nclay fraction;% weight;0.0;\n", "lacks 'value'"),
        ("\n\n", "empty"),
    ],
)
def test_malformed_static_warns_and_station_loads(tree: Path, text: str, reason: str) -> None:
    bad = tree / "COSMOS" / "ARM-1" / "COSMOS_COSMOS_ARM-1_static_variables.csv"
    bad.write_text(text)
    with pytest.raises(DataError, match=reason):
        read_ismn_static(bad)
    for read in (lambda: read_ismn(tree), lambda: S.open_stations(tree, "ismn")):
        with pytest.warns(DataLossWarning, match=rf"COSMOS_COSMOS_ARM-1_static_variables\.csv.*{reason}") as rec:
            ss = read()
        assert sum(issubclass(w.category, DataLossWarning) for w in rec) == 1
        st = ss["COSMOS.ARM-1.0.05-0.05"]
        assert st.static == {} and math.isnan(st.porosity) and st.land_cover == ""
        assert len(st.data) == 3 and ss.exclusions.empty
        assert ss["COSMOS.Fort-Peck.0.05-0.05"].static["land_cover_code"] == 70


def test_static_path_not_a_file(tree: Path) -> None:
    bad = tree / "COSMOS" / "ARM-1" / "COSMOS_COSMOS_ARM-1_static_variables.csv"
    bad.unlink()
    bad.mkdir()  # a folder where the file should be: not a file, so not used
    assert read_ismn(tree)["COSMOS.ARM-1.0.05-0.05"].static == {}
    with pytest.raises(DataError, match="cannot read ISMN static variables"):
        read_ismn_static(bad)


def test_known_metadata_not_overwritten(tree: Path) -> None:
    """Several sensors at one station share the file; each gets its own copy of the dicts."""
    d = tree / "COSMOS" / "ARM-1"
    f2 = d / "COSMOS_COSMOS_ARM-1_sm_0.100000_0.100000_Hydraprobe_20200101_20200101.stm"
    f2.write_text(_stm("COSMOS", "ARM-1").replace("0.05 0.05", "0.10 0.10"))
    ss = read_ismn(d)
    a, b = ss["COSMOS.ARM-1.0.05-0.05"], ss["COSMOS.ARM-1.0.1-0.1"]
    assert a.static == b.static and a.static is not b.static
    a.static["clay_fraction"] = -1.0
    assert b.static["clay_fraction"] == 23.0


@pytest.mark.data
def test_real_scan_file_with_static(data_dir: Path, tmp_path: Path) -> None:
    src = next((data_dir / "insitu" / "ismn_pytesmo_testdata").rglob("SCAN_SCAN_Abrams_sm_*.stm"))
    d = tmp_path / "SCAN" / "Abrams"
    d.mkdir(parents=True)
    shutil.copy(src, d / src.name)  # old-Mac CR line ends
    (d / "SCAN_SCAN_Abrams_static_variables.csv").write_text(_static(130, "Grassland"))
    st = S.open_stations(tmp_path, "ismn")["SCAN.Abrams.0.05-0.05"]
    assert st.static["saturation"] == 0.46 and st.porosity == 0.46 and st.land_cover == "Grassland"
