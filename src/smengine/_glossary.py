"""Definitions of the terms the reports use (the demo's and the station experiments').

Each report lists the terms it uses with :func:`glossary`, so a reader never meets a score
or a split that the report does not define, and the two reports define them alike.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["TERMS", "glossary"]

#: term → Markdown definition (one bullet each).
TERMS: dict[str, str] = {
    "theta_eq": (
        "**θ_eq** (m³ m⁻³): the CRNS-equivalent soil moisture: the soil profile weighted with the CRNS vertical "
        "weights of Schrön et al. (2017) at the depth D86 that the same θ_eq implies (a fixed point), averaged over "
        "the land cells of a 1-km pixel. The twin's truth; what a CRNS standing anywhere in the pixel would see."
    ),
    "subpixel": (
        "**mean_j f(x_j)** — sub-pixel scaling, the emulator's product: the forest f predicts each of the k × k "
        "sub-pixels j of a pixel from its own covariates x_j, and the pixel value is their mean."
    ),
    "pixelmean": (
        "**f(mean_j x_j)**: the same forest applied once per pixel to the pixel-mean covariates. The difference "
        "between the two is what sub-pixel scaling buys; it is zero when covariates do not vary inside a pixel or "
        "when f is linear."
    ),
    "pooled": (
        "**pooled**: one score over all pixel-days (or station-days) together; it mixes spatial and temporal "
        "contrasts. **per pixel / per station**: a score of one time series; the tables give the median over "
        "pixels or stations (the row `median` of a per-station table)."
    ),
    "scores": (
        "**R**: Pearson correlation. **bias**: mean(estimate − reference), m³ m⁻³. **ubRMSE**: the RMSE after "
        "removing the bias, √(RMSE² − bias²). **KGE**: Kling–Gupta efficiency (Gupta et al. 2009; 1 is perfect, "
        "−0.41 is the skill of the reference's mean). **NSE**: Nash–Sutcliffe efficiency."
    ),
    "anomaly_r": (
        "**anomaly R**: R of the anomalies from each series' own day-of-year climatology (`anomaly_R`) or from its "
        "35-day moving mean (`anomaly_R_35d`), as in pytesmo: skill beyond the seasonal cycle."
    ),
    "grouped_cv": (
        "**grouped CV by station**: cross-validation in which each station's days are held out together, so a "
        "station is predicted by a forest that never saw it. **Leave-site-out** is the special case of one station "
        "per fold."
    ),
    "nested": (
        "**nested selection**: a hyper-parameter search is run only on the training stations of each split (inside "
        "each fold), so the reported skill is never the search's own score."
    ),
    "spatiotemporal": (
        "**spatio-temporal leave-site-out** (leave-location-and-time-out, Meyer et al. 2018): the held-out station "
        "is predicted period by period by forests trained on the other stations outside that period, so the "
        "forest cannot learn the day's wetness from neighbours observed on the same dates."
    ),
    "temporal_split": (
        "**temporal split**: each station trains on its own early days and is scored on its later days: skill at "
        "a known place in an unseen period."
    ),
    "di": (
        "**DI** (dissimilarity index, Meyer & Pebesma 2021): the distance in importance-weighted, standardised "
        "feature space from a prediction's features to the nearest training station-day, divided by the mean "
        "distance between training rows. **AOA** (area of applicability): DI ≤ the largest cross-validated DI of "
        "the training rows that is not an outlier (≤ Q75 + 1.5 IQR). Outside it the forest extrapolates."
    ),
    "spread": (
        "**sm_uncertainty / spread**: the SD of the trees' predictions, averaged over a pixel's sub-pixels. "
        "**coverage**: the fraction of truths within ±1 or ±2 spreads; **PIT**: the probability integral transform "
        "of the truth under N(sm, spread²), flat when the spread is calibrated."
    ),
    "d86": (
        "**D86 / R86**: the depth and radius from which 86 % of the CRNS signal comes (Köhli et al. 2015; "
        "Schrön et al. 2017)."
    ),
    "pseudoproxy": (
        "**pseudoproxy**: ERA5-Land-like θ_eq taken as a stand-in truth available everywhere: a forest trained on "
        "it at the stations is scored at every other pixel, measuring how skill falls off away from stations."
    ),
    "bootstrap": (
        "**95 % interval**: the 2.5 and 97.5 percentiles of a block bootstrap (blocks of pixels × days resampled "
        "with replacement), which keeps the spatial and temporal correlation of errors inside a block."
    ),
    "paired": (
        "**paired comparison** (A vs B): both scored on the same station-days (or pixel-days); Δ = metric(A) − "
        "metric(B) per station, with |bias| for the bias. **beats** / **loses**: the 95 % interval of the mean "
        "per-station Δ lies wholly on A's / B's better side of 0; **ties**: it holds 0 (no difference can be "
        "claimed); **undetermined**: the metric is not defined (R of a constant). **wins / ties / losses**: the "
        "same rule per station, on that station's own interval."
    ),
    "station_bootstrap": (
        "**95 % interval at stations**: a block bootstrap over station × time blocks: each station's record is cut "
        "into 30-day blocks resampled with replacement (the same blocks for A and B; Hesterberg's expanded "
        "percentile interval for few blocks), and for the mean over stations the stations are resampled too, so "
        "the interval speaks for stations like these (Davison & Hinkley 1997, §3.8; Field & Welsh 2007)."
    ),
    "knndm": (
        "**kNNDM** (k-fold nearest-neighbour distance matching, Linnenbrink et al. 2024): CV folds of whole "
        "stations chosen so that the distances from held-out stations to the nearest training station match the "
        "distances from the prediction locations (the product's pixels) to the nearest station. **W**: the "
        "Wasserstein distance between those two distance distributions (km; lower: the CV resembles the map's "
        "use). **random k-fold**: station-days assigned to folds at random, so a station's other days train "
        "the model that predicts it."
    ),
    "lpd": (
        "**LPD** (local point density, Schumacher et al. 2025): how many training station-days lie within the AOA "
        "threshold of a prediction's features (the DI to each below the threshold); 0 outside the AOA, small "
        "where the forest has seen few similar days."
    ),
    "baselines": (
        "**forest**: the Random Forest (`smengine.model.train`); **linear**: ordinary least squares on the "
        "standardised features; **mean**: the mean of the training rows' θ (no skill in time: R undefined); "
        "**tdr**: the TDR profile weighted with the CRNS vertical footprint at that day's D86, a measurement, not "
        "a model."
    ),
}


def glossary(keys: Iterable[str], heading: str = "## Terms") -> list[str]:
    """Markdown lines defining ``keys`` (of :data:`TERMS`), one bullet each, under ``heading``.

    Raises
    ------
    KeyError
        A term without a definition (a report must not use an undefined term).
    """
    missing = [k for k in keys if k not in TERMS]
    if missing:
        raise KeyError(f"no definition for {missing}; defined: {sorted(TERMS)}")
    return [heading, "", *(f"- {TERMS[k]}" for k in keys), ""]
