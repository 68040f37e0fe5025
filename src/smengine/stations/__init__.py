r"""CRNS and in-situ station data: readers, counts → soil moisture, QC and daily aggregation.

Every reader returns a :class:`StationSet`: one :class:`Station` per site, each with its
site physics (coordinates, bulk density, lattice water, SOC, N0 …) and a time series in
canonical columns on a UTC :class:`pandas.DatetimeIndex`:

================== ========= =====================================================
column             unit      meaning
================== ========= =====================================================
``sm``             m³ m⁻³    volumetric soil moisture (the target)
``sm_std``         m³ m⁻³    its uncertainty, where known
``counts_raw``     cph       raw epithermal neutron count rate
``counts``         cph       corrected count rate (24 h smoothed where converted)
``pressure``       hPa       air pressure
``abs_humidity``   g m⁻³     absolute air humidity
``rel_humidity``   %         relative air humidity
``air_temperature`` °C       air temperature
``precipitation``  mm        precipitation per time step
``irrigation``     mm        irrigation water per time step (a water input beside precipitation)
``soil_temperature`` °C      soil temperature (or ``soil_temperature_<cm>``); frozen-soil mask
``bwe``            kg m⁻²    biomass water equivalent (campaign values) for the biomass correction
``flag``           bit mask  :class:`QC` flags; :meth:`StationSet.daily` masks them
================== ========= =====================================================

Any other numeric column (TDR profiles ``tdr_5`` … , soil temperature, footprint depth)
is carried along and averaged by :meth:`StationSet.daily` too.

Readers
-------
One module per format in :mod:`smengine.stations.readers`, registered by name in
:data:`FORMATS`; :func:`open_stations` picks the reader by name or guesses it from the
source, the way :func:`xarray.open_dataset` picks a backend engine:

=================== ============================ =====================================================
``FORMATS`` key     reader                       source
=================== ============================ =====================================================
``cosmos-europe``   :func:`read_cosmos_europe`   COSMOS-Europe revision 1 folder (Bogena et al. 2022)
``ismn``            :func:`read_ismn`            ISMN "header+values" ``.stm`` files (also CR line ends)
``csv``             :func:`read_csv`             a documented generic CSV (soil moisture or raw counts)
``roaring-fork``    :func:`read_roaring_fork`    the USGS Roaring Fork (Colorado) network, counts + TDR
``fuerstensee``     :func:`read_fuerstensee`     COSMOS-Europe FSC001 raw hourly counts (neptoon example)
=================== ============================ =====================================================

Package layout: ``_core`` (QC bits, :class:`Station`, :class:`StationSet`, daily
aggregation), ``_counts`` (QC and counts → θ), ``_parse`` (helpers the readers share),
``readers/`` (one module per format and the registry).

Raw counts become soil moisture with :func:`counts_to_sm` (SCIENCE.md §5.3, CE-PROC):
hourly rates, extreme-count and outlier removal, pressure/humidity/incoming-flux factors
(:mod:`smengine.neutrons`), a centred 24 h moving mean and the Desilets conversion.

Bad input never disappears silently: a missing column, an unparseable date or a file
that cannot be read raises :class:`~smengine.errors.DataError` naming the file; a station
without coordinates or metadata is excluded and *reported* in
:attr:`StationSet.exclusions` (or raises with ``strict=True``); values outside the
physical range are flagged :attr:`QC.OUT_OF_RANGE`, counted and masked.

Units are not taken on trust (generic CSV): each column of :data:`PLAUSIBILITY` is checked
per station from its median, so a few outliers never flip a unit. Known alternative units
(kelvin, kg m⁻³, percent, a humidity fraction, kPa/Pa) are converted with a
:class:`~smengine.errors.QualityWarning` naming station and column; a median that fits no
unit, and counts whose level against N0 says they are per minute or per 15 minutes, are a
:class:`~smengine.errors.DataError`; single values outside the physical range (counts ≤ 0
or above 10⁶ cph, TDR outside [0, 1] …) become NaN, counted per station and column in one
:class:`~smengine.errors.DataLossWarning`.

References
----------
.. [1] Bogena, H. R. et al. (2022). COSMOS-Europe: a European network of cosmic-ray neutron
   soil moisture sensors. ESSD 14, 1125–1151.
.. [2] Dorigo, W. et al. (2021). The International Soil Moisture Network: serving Earth
   system science for over a decade. HESS 25, 5749–5804.
"""

from __future__ import annotations

from smengine.stations._core import (
    CANONICAL_COLUMNS,
    DEFAULT_MASK,
    PHYSICAL_RANGE,
    QC,
    Exclusion,
    Station,
    StationSet,
    step_hours,
)
from smengine.stations._counts import (
    FROZEN_AIR_TEMPERATURE,
    FROZEN_SOIL_TEMPERATURE,
    counts_to_sm,
    mask_frozen,
    read_nmdb,
)
from smengine.stations._units import PLAUSIBILITY
from smengine.stations.readers import FORMATS, guess_format, open_stations
from smengine.stations.readers.cosmos_europe import read_cosmos_europe, read_cosmos_europe_metadata
from smengine.stations.readers.fuerstensee import read_fuerstensee
from smengine.stations.readers.generic import read_csv
from smengine.stations.readers.ismn import read_ismn, read_ismn_static
from smengine.stations.readers.roaring_fork import ROARING_FORK_TDR_DEPTHS, read_roaring_fork

__all__ = [
    "CANONICAL_COLUMNS",
    "DEFAULT_MASK",
    "FORMATS",
    "PHYSICAL_RANGE",
    "PLAUSIBILITY",
    "QC",
    "ROARING_FORK_TDR_DEPTHS",
    "Exclusion",
    "Station",
    "StationSet",
    "counts_to_sm",
    "mask_frozen",
    "FROZEN_AIR_TEMPERATURE",
    "FROZEN_SOIL_TEMPERATURE",
    "guess_format",
    "open_stations",
    "read_cosmos_europe",
    "read_cosmos_europe_metadata",
    "read_csv",
    "read_fuerstensee",
    "read_ismn",
    "read_ismn_static",
    "read_nmdb",
    "read_roaring_fork",
    "step_hours",
]
