"""Station readers, one module per format, and the registry :data:`FORMATS`.

A reader is a function ``reader(source, **kwargs) -> StationSet``. :func:`open_stations`
calls the one named by ``format`` or, without it, the one :func:`guess_format` finds for
the source (xarray's ``open_dataset(engine=...)`` / ``guess_engine`` pattern). The CLI's
``--format`` choices and :mod:`smengine.experiments` use this registry.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smengine.errors import ConfigError, DataError, DataLossWarning
from smengine.stations._core import StationSet
from smengine.stations.readers.cosmos_europe import read_cosmos_europe
from smengine.stations.readers.fuerstensee import read_fuerstensee
from smengine.stations.readers.generic import read_csv
from smengine.stations.readers.ismn import read_ismn
from smengine.stations.readers.roaring_fork import read_roaring_fork

__all__ = ["FORMATS", "guess_format", "open_stations"]

#: Reader of each station format, by the name the CLI's ``--format`` takes.
FORMATS: dict[str, Callable[..., StationSet]] = {
    "cosmos-europe": read_cosmos_europe,
    "csv": read_csv,
    "fuerstensee": read_fuerstensee,
    "ismn": read_ismn,
    "roaring-fork": read_roaring_fork,
}


def _head(path: Path) -> str:
    try:
        with open(path, encoding="latin-1") as f:
            return f.readline()
    except OSError:
        return ""


def guess_format(source: str | os.PathLike[str]) -> str:
    """The :data:`FORMATS` key for a station source, from its layout.

    * a folder with a COSMOS-Europe ``General_information`` table: ``cosmos-europe``;
    * a folder with ``RoaringFork_CRNS_metadata.csv`` or ``data_release_2024/``: ``roaring-fork``;
    * a ``.stm`` file, or a folder with ``.stm`` files below it: ``ismn``;
    * a CSV whose header has ``NeutronCount_Epithermal_Cum1h``: ``fuerstensee``;
    * any other ``.csv`` / ``.txt`` file: ``csv``.

    Raises
    ------
    ConfigError
        When nothing fits, naming the source and the formats.
    """
    p = Path(source).expanduser()
    if p.is_dir():
        names = {q.name.lower().replace(" ", "") for q in p.iterdir()}
        if any(n.startswith("general_information") and n.endswith(".csv") for n in names):
            return "cosmos-europe"
        if "roaringfork_crns_metadata.csv" in names or "data_release_2024" in names:
            return "roaring-fork"
        if next(p.rglob("*.stm"), None) is not None:
            return "ismn"
    elif p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".stm":
            return "ismn"
        if suffix in (".csv", ".txt"):
            return "fuerstensee" if "NeutronCount_Epithermal_Cum1h" in _head(p) else "csv"
    raise ConfigError(
        f"{p}: cannot tell the station format (no such file or folder, or an unknown layout); "
        f"choose the reader with format= (--format on the command line), one of {sorted(FORMATS)}"
    )


#: Above this fraction of excluded stations :func:`open_stations` raises instead of warning.
MAX_EXCLUDED_FRACTION = 0.5


def open_stations(
    source: str | os.PathLike[str],
    format: str | None = None,
    *,
    metadata: str | os.PathLike[str] | None = None,
    max_excluded: float = MAX_EXCLUDED_FRACTION,
    **kwargs: Any,
) -> StationSet:
    """Read a station set with the reader of ``format`` (default: :func:`guess_format`).

    Parameters
    ----------
    source : path
        What the reader reads (a folder or a file).
    format : str, optional
        A :data:`FORMATS` key.
    metadata : path, optional
        The station table, for the formats whose reader takes one (``csv``,
        ``fuerstensee``); an error for the others.
    max_excluded : float, optional
        Stations a reader excludes (an unreadable file, no coordinates …) are listed in
        :attr:`StationSet.exclusions` and reported in a
        :class:`~smengine.errors.DataLossWarning`; when more than this fraction of the
        stations found is excluded, a :class:`~smengine.errors.DataError` is raised instead.
    **kwargs
        Passed to the reader (e.g. ``metadata=`` for ``csv``).

    Returns
    -------
    StationSet

    Raises
    ------
    ConfigError
        For an unknown format or one that cannot be guessed; the readers' own errors
        (:class:`~smengine.errors.DataError` naming the file) pass through.
    DataError
        More than ``max_excluded`` of the stations were excluded (or none was read).

    Examples
    --------
    >>> sorted(FORMATS)
    ['cosmos-europe', 'csv', 'fuerstensee', 'ismn', 'roaring-fork']
    """
    source = Path(source).expanduser()
    metadata = Path(metadata).expanduser() if metadata is not None else None
    fmt = guess_format(source) if format is None else format
    if fmt not in FORMATS:
        raise ConfigError(f"unknown station format {fmt!r}; choose from {sorted(FORMATS)}")
    reader = FORMATS[fmt]
    if metadata is not None:
        if "metadata" not in inspect.signature(reader).parameters:
            raise ConfigError(f"the {fmt} format takes no separate station table (metadata={metadata})")
        kwargs["metadata"] = metadata
    takes = inspect.signature(reader).parameters
    unknown = [k for k in kwargs if k not in takes]
    if unknown:
        raise ConfigError(
            f"the {fmt} format does not take {', '.join(unknown)} (it takes: "
            f"{', '.join(k for k in takes if k not in ('path', 'source'))})"
        )
    out = reader(source, **kwargs)
    excl = out.exclusions
    if len(excl):
        ids = sorted(set(excl["station"]) - set(out))
        n_found = len(out) + len(ids)
        rows = list(zip(excl["station"], excl["reason"], strict=True))
        listed = "; ".join(f"{st}: {why}" for st, why in rows[:5]) + (" …" if len(rows) > 5 else "")
        msg = f"{source}: {len(ids)} of {n_found} station(s) excluded ({listed})"
        if n_found and (len(out) == 0 or len(ids) / n_found > max_excluded):
            how = ""
            if format is None:
                how = f" (format {fmt!r} guessed: choose the reader with format=, --format on the CLI)"
            raise DataError(f"{msg}; more than max_excluded={max_excluded:g} of the network{how}")
        warnings.warn(msg + "; see StationSet.exclusions", DataLossWarning, stacklevel=2)
    return out
