r"""The spatial network: a small fully convolutional net on patches of sub-pixel features.

See :mod:`smengine.nn` for the model, its training and how it is applied.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from smengine.errors import ConfigError, DataError, ValidationError
from smengine.nn._detect import FORMAT, SUFFIX, require_torch

try:  # the module imports without PyTorch (doctest walks, smengine.nn's lazy names); train/load need it
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - exercised where torch is absent
    torch = nn = None  # type: ignore[assignment]

__all__ = ["NetConfig", "SpatialNet", "load", "pseudo_patches", "station_patches", "train"]

log = logging.getLogger(__name__)

#: Predictions are clipped to the volumetric range, m³ m⁻³ (the forest's TARGET_RANGE).
_TARGET_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class NetConfig:
    """Architecture and training settings of a :class:`SpatialNet`.

    Parameters
    ----------
    half_width : int
        Receptive-field half-width in sub-pixels: ``half_width`` 3 × 3 convolutions without
        padding see a ``(2·half_width + 1)²`` patch (default 5: 11 × 11 sub-pixels, ±1.25 km
        at 250-m sub-pixels, beyond the CRNS footprint).
    width : int
        Channels of the 3 × 3 layers (default 16).
    head : int
        Channels of the hidden 1 × 1 layer before the output (default 16).
    max_epochs, patience : int
        Epochs at most per fold, and epochs without a better validation RMSE before a fold
        stops (early stopping on the grouped CV).
    batch_size : int
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay.
    lr_decay : float
        Factor on the learning rate after 2 epochs without a better validation RMSE of the
        fold (``ReduceLROnPlateau``; 0 or 1: a constant rate).
    augment : bool
        Random flips and quarter turns of every patch (the 8 symmetries of the square).
    n_splits : int
        Folds of the grouped CV by station (``GroupKFold``; fewer when there are fewer stations).
    """

    half_width: int = 5
    width: int = 16
    head: int = 16
    max_epochs: int = 40
    patience: int = 6
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    augment: bool = True
    n_splits: int = 5
    lr_decay: float = 0.5

    def __post_init__(self) -> None:
        for name in ("half_width", "width", "head", "max_epochs", "patience", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"NetConfig.{name} should be >= 1, got {getattr(self, name)}")
        if int(self.n_splits) < 2:
            raise ConfigError(f"NetConfig.n_splits should be >= 2, got {self.n_splits}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ConfigError(f"NetConfig: lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")

    @property
    def patch(self) -> int:
        """Patch side in sub-pixels, ``2·half_width + 1``."""
        return 2 * self.half_width + 1

    def get_config(self) -> dict[str, Any]:
        """JSON-safe dict; ``NetConfig.from_config(c.get_config()) == c``."""
        return asdict(self)

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> NetConfig:
        """Inverse of :meth:`get_config`."""
        return cls(**dict(d))


def _net(n_in: int, cfg: NetConfig) -> nn.Sequential:
    """``half_width`` unpadded 3 × 3 conv + GELU layers, then a 1 × 1 head: (N, n_in, h, w) →
    (N, 1, h − 2·half_width, w − 2·half_width)."""
    layers: list[nn.Module] = []
    c = n_in
    for _ in range(cfg.half_width):
        layers += [nn.Conv2d(c, cfg.width, 3), nn.GELU()]
        c = cfg.width
    layers += [nn.Conv2d(c, cfg.head, 1), nn.GELU(), nn.Conv2d(cfg.head, 1, 1)]
    return nn.Sequential(*layers)


@contextlib.contextmanager
def _torch_settings(n_threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and ``n_threads`` intra-op threads inside, restored after."""
    det = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if n_threads is not None:
        torch.set_num_threads(max(int(n_threads), 1))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


def _encode(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> torch.Tensor:
    """(N, F, h, w) raw features → (N, F + 1, h, w) network input: standardised features with
    NaN/inf set to 0 (the training mean), and a last channel 1 where every feature is finite."""
    x = np.asarray(x, dtype=np.float32)
    ok = np.isfinite(x)
    z = (x - mean[None, :, None, None]) / sd[None, :, None, None]
    z = np.where(ok, z, 0.0).astype(np.float32)
    valid = ok.all(axis=1, keepdims=True).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(np.concatenate([z, valid], axis=1)))


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 symmetries of the square on the last two axes (k = 0: identity)."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each patch of the batch by its own random symmetry (drawn from ``g``)."""
    ks = torch.randint(0, 8, (x.shape[0],), generator=g)
    out = torch.empty_like(x)
    for k in range(8):
        m = ks == k
        if bool(m.any()):
            out[m] = _dihedral(x[m], k)
    return out


def _versions() -> dict[str, Any]:
    import platform

    from smengine import __version__

    return {
        "smengine": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


class SpatialNet:
    """A trained spatial network: an ensemble of fully convolutional nets with their feature
    definition, standardisation and model card.

    Made by :func:`train` or :func:`load`; :func:`smengine.engine.predict`,
    :func:`smengine.engine.run` and ``smengine predict`` take it (or its file) wherever they
    take a forest.

    Attributes
    ----------
    feature_names : list of str
        Features in channel order (names of :class:`~smengine.features.FeatureBuilder`).
    spec : dict
        The :class:`~smengine.features.FeatureSpec` configuration the features come from.
    units : dict of str → str
        Units of each feature (checked against the tile's at inference).
    config : NetConfig
    members : list of torch.nn.Sequential
        The ensemble (one net per CV fold, each stopped at the epoch chosen by the CV).
    card : dict
        The model card (JSON-safe): features, target, stations, period, training settings,
        the grouped CV (metrics pooled and median over stations), the CV curve, versions and
        ``content_hash``; stored in every product's ``smengine_model_card``.
    cv_predictions : pandas.DataFrame
        Out-of-fold predictions ``station, date, target, scheme ("site"), fold, prediction``
        (empty after :func:`load`).
    """

    _smengine_nn = True

    def __init__(
        self,
        members: Sequence[nn.Module],
        *,
        feature_names: Sequence[str],
        spec: Mapping[str, Any],
        units: Mapping[str, str],
        kinds: Mapping[str, str],
        mean: npt.ArrayLike,
        sd: npt.ArrayLike,
        y_mean: float,
        y_sd: float,
        config: NetConfig,
        card: Mapping[str, Any] | None = None,
        cv_predictions: pd.DataFrame | None = None,
    ) -> None:
        self.members = list(members)
        for m in self.members:
            m.eval()
        self.feature_names = list(feature_names)
        self.spec = dict(spec)
        self.units = dict(units)
        self.kinds = dict(kinds)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.sd = np.asarray(sd, dtype=np.float32)
        self.y_mean = float(y_mean)
        self.y_sd = float(y_sd)
        self.config = config
        self.content_hash = self._hash()
        self.card: dict[str, Any] = {**dict(card or {}), "content_hash": self.content_hash}
        self.cv_predictions = cv_predictions if cv_predictions is not None else pd.DataFrame()

    # ------------------------------------------------------------------ description
    def _head(self) -> dict[str, Any]:
        """Everything but the weights and the card: what the model computes."""
        return {
            "format": FORMAT,
            "feature_names": self.feature_names,
            "spec": self.spec,
            "units": self.units,
            "kinds": self.kinds,
            "mean": self.mean.tolist(),
            "sd": self.sd.tolist(),
            "y_mean": self.y_mean,
            "y_sd": self.y_sd,
            "net": self.config.get_config(),
            "n_members": len(self.members),
        }

    def _hash(self) -> str:
        h = hashlib.sha256(json.dumps(self._head(), sort_keys=True).encode())
        for m in self.members:
            for k, v in m.state_dict().items():
                h.update(k.encode())
                h.update(v.detach().cpu().numpy().astype(np.float32).tobytes())
        return "sha256:" + h.hexdigest()

    @property
    def half_width(self) -> int:
        """Receptive-field half-width, sub-pixels."""
        return self.config.half_width

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def __repr__(self) -> str:
        cv = (self.card.get("cv") or {}).get("site") or {}
        med = cv.get("site_median") or {}
        skill = f", grouped-CV median R {med['R']:.3f}" if med.get("R") is not None else ""
        return (
            f"<SpatialNet {len(self.members)} nets, {self.n_features} features, "
            f"{self.config.patch}×{self.config.patch} sub-pixel patch{skill}, {self.content_hash[:19]}>"
        )

    def __getstate__(self) -> dict[str, Any]:  # pickles (Dask scatters it) through the file format
        buf = io.BytesIO()
        self._save(buf)
        return {"blob": buf.getvalue()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = _load(io.BytesIO(state["blob"]), "<pickle>")
        self.__dict__.update(other.__dict__)

    # ------------------------------------------------------------------ prediction
    def predict_patches(self, x: npt.ArrayLike, *, n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Prediction at the centre of each patch.

        Parameters
        ----------
        x : array_like, shape (n, F, p, p)
            Raw (not standardised) features in :attr:`feature_names` order, p = 2·half_width + 1;
            NaN where unknown (outside the tile too).

        Returns
        -------
        mean, sd : ndarray, float32, shape (n,)
            Ensemble mean (clipped to [0, 1]) and standard deviation (m³ m⁻³); NaN where a
            feature of the centre sub-pixel is not finite.
        """
        x = np.asarray(x, dtype=np.float32)
        p = self.config.patch
        if x.ndim != 4 or x.shape[1] != self.n_features or x.shape[2:] != (p, p):
            raise ValidationError(f"patches should have shape (n, {self.n_features}, {p}, {p}), got {x.shape}")
        m, s = self._run(x)
        return m[:, 0, 0], s[:, 0, 0]

    def predict_subpixels(
        self, x: npt.ArrayLike, *, n_threads: int | None = None, batch: int = 8
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prediction at every sub-pixel of whole rasters, convolutionally.

        Each raster is padded by :attr:`half_width` sub-pixels of NaN (unknown, as outside
        the tile when training patches are cut), so the value at every sub-pixel equals
        :meth:`predict_patches` of the patch centred on it.

        Parameters
        ----------
        x : array_like, shape (D, F, H, W)
            Raw features of D days (or any stack) in :attr:`feature_names` order.
        batch : int
            Rasters per forward pass.

        Returns
        -------
        mean, sd : ndarray, float32, shape (D, H, W)
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != self.n_features:
            raise ValidationError(f"rasters should have shape (D, {self.n_features}, H, W), got {x.shape}")
        h = self.half_width
        D, F, H, W = x.shape
        mean = np.empty((D, H, W), np.float32)
        sd = np.empty((D, H, W), np.float32)
        with _torch_settings(n_threads):
            for i in range(0, D, batch):
                xp = np.full((min(batch, D - i), F, H + 2 * h, W + 2 * h), np.nan, np.float32)
                xp[:, :, h : h + H, h : h + W] = x[i : i + batch]
                mean[i : i + batch], sd[i : i + batch] = self._run(xp)
        return mean, sd

    def _run(self, xp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble on padded rasters (N, F, h + 2k, w + 2k) → mean, sd (N, h, w) in target units;
        NaN where the centre sub-pixel has a non-finite feature."""
        k = self.half_width
        z = _encode(xp, self.mean, self.sd)
        with torch.no_grad():
            outs = np.stack([m(z)[:, 0].numpy() for m in self.members]).astype(np.float64)
        outs = outs * self.y_sd + self.y_mean
        mean = np.clip(outs.mean(axis=0), *_TARGET_RANGE)  # a net can extrapolate past the physical range
        sd = outs.std(axis=0) if len(self.members) > 1 else np.zeros_like(mean)
        centre = z[:, -1, k : z.shape[2] - k, k : z.shape[3] - k].numpy() > 0.5
        return np.where(centre, mean, np.nan).astype(np.float32), np.where(centre, sd, np.nan).astype(np.float32)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to one file (``torch.save`` of the weights and a JSON header; atomic).

        The name should end in ``.smnn.pt``; :func:`load` reads it back and ``smengine
        predict`` takes it in place of a forest.
        """
        from smengine._io import atomic_target

        out = Path(path).expanduser()
        if not out.name.endswith(SUFFIX):
            log.info("%s: a spatial network file is usually named *%s", out, SUFFIX)
        with atomic_target(out) as tmp, open(tmp, "wb") as f:
            self._save(f)
        return out

    def _save(self, f: Any) -> None:
        payload = {
            "format": FORMAT,
            "header": json.dumps(self._head(), sort_keys=True),
            "card": json.dumps(self.card, sort_keys=True, allow_nan=False),
            "members": [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.members],
        }
        torch.save(payload, f)


def load(path: str | os.PathLike[str]) -> SpatialNet:
    """Read a :class:`SpatialNet` written by :meth:`SpatialNet.save`.

    Raises
    ------
    DataError
        Naming the file: unreadable, not a spatial network, or its weights do not give back
        its recorded content hash.
    """
    require_torch()
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    with open(p, "rb") as f:
        return _load(f, str(p))


def _load(f: Any, where: str) -> SpatialNet:
    try:
        payload = torch.load(f, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise DataError(f"{where}: not a smengine spatial network (format {FORMAT})")
        head = json.loads(payload["header"])
        card = json.loads(payload["card"])
    except DataError:
        raise
    except Exception as exc:  # torch raises many kinds on a foreign or damaged file
        raise DataError(f"{where}: cannot read the spatial network: {exc}") from exc
    cfg = NetConfig.from_config(head["net"])
    members = []
    for state in payload["members"]:
        m = _net(len(head["feature_names"]) + 1, cfg)
        m.load_state_dict(state)
        members.append(m)
    model = SpatialNet(
        members,
        feature_names=head["feature_names"],
        spec=head["spec"],
        units=head["units"],
        kinds=head["kinds"],
        mean=head["mean"],
        sd=head["sd"],
        y_mean=head["y_mean"],
        y_sd=head["y_sd"],
        config=cfg,
        card=card,
    )
    if card.get("content_hash") not in (None, model.content_hash):
        raise DataError(f"{where}: the weights do not match the recorded content hash (damaged file?)")
    return model


# ======================================================================================
# training patches
# ======================================================================================
def _features_of(spec: Any, names: Sequence[str] | None, store: Any) -> tuple[Any, list[str], list[int]]:
    from smengine.features import FeatureBuilder

    fb = FeatureBuilder(store, spec)
    want = list(fb.names) if names is None else list(names)
    missing = [n for n in want if n not in fb.names]
    if missing:
        raise ConfigError(f"{store.path}: feature(s) {missing} are not made by the spec (it makes {fb.names})")
    return fb, want, [fb.names.index(n) for n in want]


def station_patches(
    table: pd.DataFrame,
    stores: Any,
    features: Sequence[str] | None = None,
    *,
    spec: Any = None,
    half_width: int = 5,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Patches of sub-pixel features centred on the stations, one per row of a training table.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`smengine.features.training_table` output (``station``, ``date``, ``target``,
        ``x``, ``y``, ``tile``).
    stores : TileStore or iterable of TileStore
        The tiles the table was made from (matched by ``tile``).
    features : sequence of str, optional
        Feature names (default every feature of the spec).
    spec : FeatureSpec, optional
        Default ``table.attrs["spec"]``.
    half_width : int
        Patch half-width, sub-pixels.

    Returns
    -------
    patches : ndarray, float32, shape (n, F, 2·half_width + 1, 2·half_width + 1)
        Raw features; NaN where unknown or outside the tile.
    rows : pandas.DataFrame
        ``station, date, target, tile, row, col`` (the centre sub-pixel) of each patch.
    """
    from smengine.features import FeatureSpec
    from smengine.grid import Window
    from smengine.tiles import TileStore

    stores = [stores] if isinstance(stores, TileStore) or not hasattr(stores, "__iter__") else list(stores)
    by_id = {s.tile_id: s for s in stores}
    if spec is None:
        if "spec" not in table.attrs:
            raise ConfigError("station_patches: pass spec= (the table has no .attrs['spec'])")
        spec = FeatureSpec.from_saved(table.attrs["spec"])
    for col in ("station", "date", "target", "x", "y", "tile"):
        if col not in table.columns:
            raise ValidationError(f"station_patches: the table has no column {col!r} (a training_table has)")
    k = int(half_width)
    p = 2 * k + 1
    out_rows: list[pd.DataFrame] = []
    chunks: list[np.ndarray] = []
    names: list[str] | None = None
    for tid, gt in table.groupby("tile", sort=True):
        if tid not in by_id:
            raise ConfigError(f"station_patches: the table's tile {tid!r} is not among the stores {sorted(by_id)}")
        st = by_id[tid]
        fb, want, cols = _features_of(spec, features, st)
        if names is not None and want != names:
            raise ValidationError(f"{st.path}: features {want} differ from the other tiles' {names}")
        names = want
        ny, nx = st.grid.subpixel_shape
        for (_sid, x, y), g in gt.groupby(["station", "x", "y"], sort=True):
            r, c = (int(v) for v in st.grid.rowcol(x, y, subpixel=True))
            r0, r1, c0, c1 = max(r - k, 0), min(r + k + 1, ny), max(c - k, 0), min(c + k + 1, nx)
            if r0 >= r1 or c0 >= c1:
                raise ValidationError(f"{st.path}: station {_sid} at ({x}, {y}) is outside the tile")
            win = Window(c0, r0, c1 - c0, r1 - r0)
            sw = fb.swi(win) if fb.swi_names else None
            days = g["date"].to_numpy().astype("datetime64[D]")
            t_idx = np.searchsorted(st.times, days)
            if (t_idx >= st.times.size).any() or (st.times[np.minimum(t_idx, st.times.size - 1)] != days).any():
                raise ValidationError(f"{st.path}: station {_sid} has table days that the tile does not hold")
            buf = np.empty((len(fb.names), r1 - r0, c1 - c0), np.float32)
            arr = np.full((len(g), len(cols), p, p), np.nan, np.float32)
            for i, t in enumerate(t_idx):
                fb.day(int(t), win, sw, out=buf)
                arr[i, :, r0 - (r - k) : r1 - (r - k), c0 - (c - k) : c1 - (c - k)] = buf[cols]
            chunks.append(arr)
            out_rows.append(
                pd.DataFrame(
                    {
                        "station": g["station"].to_numpy(),
                        "date": pd.to_datetime(g["date"]).to_numpy(),
                        "target": g["target"].to_numpy(float),
                        "tile": tid,
                        "row": r,
                        "col": c,
                    }
                )
            )
    if not chunks:
        raise DataError("station_patches: the table has no rows")
    return np.concatenate(chunks), pd.concat(out_rows, ignore_index=True)


# ======================================================================================
# training
# ======================================================================================
def _epoch(
    net: nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor, cfg: NetConfig, g: torch.Generator
) -> None:
    net.train()
    order = torch.randperm(X.shape[0], generator=g)
    for i in range(0, X.shape[0], cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        xb = X[idx]
        if cfg.augment:
            xb = _augment(xb, g)
        opt.zero_grad()
        loss = torch.mean((net(xb)[:, 0, 0, 0] - y[idx]) ** 2)
        loss.backward()
        opt.step()
    net.eval()


def _forward(net: nn.Module, X: torch.Tensor, batch: int = 2048) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([net(X[i : i + batch])[:, 0, 0, 0].numpy() for i in range(0, X.shape[0], batch)])


def _fit_fold(
    X: torch.Tensor,
    y: torch.Tensor,
    tr: np.ndarray,
    va: np.ndarray,
    cfg: NetConfig,
    seed: int,
    init: Mapping[str, torch.Tensor] | None,
) -> tuple[list[dict[str, torch.Tensor]], list[float], np.ndarray]:
    """Train one net on rows ``tr``; (state after each epoch, validation RMSE per epoch
    (standardised units), validation predictions per epoch (epochs, len(va)))."""
    torch.manual_seed(seed)
    net = _net(X.shape[1], cfg)
    if init is not None:
        net.load_state_dict(init)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_decay, patience=1)
        if 0 < cfg.lr_decay < 1
        else None
    )
    g = torch.Generator().manual_seed(seed)
    Xt, yt, Xv, yv = X[tr], y[tr], X[va], y[va].numpy()
    states, curve, preds = [], [], []
    best, since = math.inf, 0
    for _ in range(cfg.max_epochs):
        _epoch(net, opt, Xt, yt, cfg, g)
        pv = _forward(net, Xv)
        rmse = float(np.sqrt(np.mean((pv - yv) ** 2)))
        if sched is not None:
            sched.step(rmse)
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        curve.append(rmse)
        preds.append(pv)
        if rmse < best - 1e-6:
            best, since = rmse, 0
        else:
            since += 1
            if since >= cfg.patience:
                break
    return states, curve, np.stack(preds)


def train(
    table: pd.DataFrame,
    stores: Any,
    features: Sequence[str] | None = None,
    *,
    spec: Any = None,
    config: NetConfig | None = None,
    seed: int = 0,
    n_threads: int | None = 1,
    pretrain: Mapping[str, Any] | None = None,
    progress: Callable[[str], Any] | None = None,
    **overrides: Any,
) -> SpatialNet:
    r"""Train the spatial network on station-days (patches centred on the stations).

    1. :func:`station_patches` cuts a ``(2·half_width + 1)²`` patch of every feature around
       each station's sub-pixel on each of its days; rows whose target or centre sub-pixel is
       not finite are left out. Features are standardised by their mean and SD over the
       patches (stored with the model), NaN set to the mean with a validity channel.
    2. Grouped CV by station (``GroupKFold(n_splits)``): one net per fold, trained with
       AdamW (weight decay), random flips/quarter turns of the patches and early stopping
       (``patience``) on the held-out stations.
    3. The number of epochs is the minimum of the fold-mean validation RMSE; every fold's net
       at that epoch is kept, and the ensemble's mean is the prediction, its SD the
       uncertainty. Each station's out-of-fold prediction (by the net that never saw it) is
       the CV estimate in the card and :attr:`SpatialNet.cv_predictions`.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`smengine.features.training_table` output.
    stores : TileStore or iterable of TileStore
        The tiles of the table.
    features : sequence of str, optional
        Features to use (default every feature of the spec).
    spec : FeatureSpec, optional
        Default ``table.attrs["spec"]``.
    config : NetConfig, optional
        Architecture and training settings; ``**overrides`` replace its fields.
    seed : int
        Seed of the weights, the batches and the augmentation: the same seed and inputs
        give the same weights (CPU, deterministic algorithms).
    n_threads : int, optional
        PyTorch threads while training (default 1; the result does not depend on it
        beyond float rounding).
    pretrain : dict, optional
        Pre-training on pseudo-targets before the station folds: ``{"patches": (n, F, p, p)
        array, "target": (n,) array}`` (e.g. from :func:`pseudo_patches` with ERA5-Land
        θ_eq); one net is fitted on them for ``pretrain.get("epochs", 5)`` epochs and every
        fold starts from its weights.
    progress : callable, optional
        Called with a short message at each stage.

    Returns
    -------
    SpatialNet

    Raises
    ------
    DataError
        Fewer than 2 stations with usable rows.
    """
    from sklearn.model_selection import GroupKFold

    from smengine.features import FeatureSpec
    from smengine.metrics import evaluate

    require_torch()
    cfg = config or NetConfig()
    if overrides:
        cfg = NetConfig.from_config({**cfg.get_config(), **overrides})
    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    spec_obj = spec if spec is not None else FeatureSpec.from_saved(table.attrs["spec"])
    say("patches")
    X, rows = station_patches(table, stores, features, spec=spec_obj, half_width=cfg.half_width)
    stores_l = [stores] if not hasattr(stores, "__iter__") else list(stores)
    fb, names, _ = _features_of(spec_obj, features, stores_l[0])
    k = cfg.half_width
    ok = np.isfinite(rows["target"].to_numpy()) & np.isfinite(X[:, :, k, k]).all(axis=1)
    n_dropped = int((~ok).sum())
    X, rows = X[ok], rows[ok].reset_index(drop=True)
    groups = rows["station"].to_numpy().astype(str)
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise DataError(f"train: {n_groups} station(s) with usable rows; the grouped CV needs at least 2")
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.where(np.isfinite(X), X, np.nan), axis=(0, 2, 3))
        sd = np.nanstd(np.where(np.isfinite(X), X, np.nan), axis=(0, 2, 3))
    mean = np.where(np.isfinite(mean), mean, 0.0).astype(np.float32)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0).astype(np.float32)
    yv = rows["target"].to_numpy(np.float64)
    y_mean, y_sd = float(yv.mean()), float(yv.std() or 1.0)
    Xt = _encode(X, mean, sd)
    yt = torch.from_numpy(((yv - y_mean) / y_sd).astype(np.float32))
    splits = list(GroupKFold(n_splits=min(cfg.n_splits, n_groups)).split(X, groups=groups))
    init = None
    # the seeds below drive everything; the caller's global torch RNG state is left as it was
    with _torch_settings(n_threads), torch.random.fork_rng(devices=[]):
        if pretrain is not None:
            say("pre-training on pseudo-targets")
            Xp = _encode(np.asarray(pretrain["patches"], np.float32), mean, sd)
            yp = torch.from_numpy(((np.asarray(pretrain["target"], np.float64) - y_mean) / y_sd).astype(np.float32))
            torch.manual_seed(seed + 7919)
            net = _net(Xt.shape[1], cfg)
            opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            g = torch.Generator().manual_seed(seed + 7919)
            for _ in range(int(pretrain.get("epochs", 5))):
                _epoch(net, opt, Xp, yp, cfg, g)
            init = {kk: v.detach().clone() for kk, v in net.state_dict().items()}
        fits = []
        for i, (tr, va) in enumerate(splits):
            say(f"fold {i + 1}/{len(splits)}")
            fits.append(_fit_fold(Xt, yt, tr, va, cfg, seed * 1000 + i, init))
    n_common = min(len(c) for _, c, _ in fits)
    mean_curve = np.mean([c[:n_common] for _, c, _ in fits], axis=0)
    best = int(np.argmin(mean_curve))
    members = []
    oof = np.full(len(rows), np.nan)
    fold_of = np.full(len(rows), -1)
    for i, ((states, _, preds), (_, va)) in enumerate(zip(fits, splits, strict=True)):
        m = _net(Xt.shape[1], cfg)
        m.load_state_dict(states[best])
        members.append(m)
        oof[va] = preds[best] * y_sd + y_mean
        fold_of[va] = i
    cvp = pd.DataFrame(
        {
            "station": rows["station"].to_numpy(),
            "date": rows["date"].to_numpy(),
            "target": yv,
            "scheme": "site",
            "fold": fold_of,
            "group": rows["station"].to_numpy(),
            "prediction": oof,
        }
    )
    site = {sid: evaluate(g["prediction"].to_numpy(), g["target"].to_numpy()) for sid, g in cvp.groupby("station")}
    site_df = pd.DataFrame.from_dict(site, orient="index")
    med = {c: float(site_df[c].median()) for c in ("R", "RMSE", "ubRMSE", "bias", "KGE") if c in site_df}
    seconds = time.perf_counter() - t0
    dates = pd.to_datetime(rows["date"])
    card = {
        "model": "smengine.nn spatial CNN (fully convolutional, sub-pixel patches; ensemble of the CV fold nets)",
        "features": [
            {"name": n, "units": fb.units.get(n), "kind": fb.kinds.get(n), "source": fb.sources.get(n)} for n in names
        ],
        "target": {"name": "target", "units": "m3 m-3"},
        "stations": sorted(np.unique(groups).tolist()),
        "period": [str(dates.min().date()), str(dates.max().date())],
        "n_samples": len(rows),
        "n_dropped": {"total": n_dropped},
        "hyperparameters": {**cfg.get_config(), "seed": int(seed), "pretrained": pretrain is not None},
        "cv": {
            "site": {
                "splitter": f"GroupKFold(n_splits={len(splits)})",
                "n_folds": len(splits),
                "n_groups": int(n_groups),
                "metrics": {k: _finite(v) for k, v in evaluate(oof, yv).items()},
                "site_median": {k: _finite(v) for k, v in med.items()},
                "epochs": best + 1,
                "curve_rmse": [float(v) * y_sd for v in mean_curve],
            }
        },
        "training_seconds": seconds,
        "versions": _versions(),
    }
    model = SpatialNet(
        members,
        feature_names=names,
        spec=spec_obj.get_config(),
        units={n: fb.units.get(n, "") for n in names},
        kinds={n: fb.kinds.get(n, "") for n in names},
        mean=mean,
        sd=sd,
        y_mean=y_mean,
        y_sd=y_sd,
        config=cfg,
        card=card,
        cv_predictions=cvp,
    )
    log.info("%r trained in %.1f s (%d epochs chosen by the grouped CV)", model, seconds, best + 1)
    return model


def _finite(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else None


def pseudo_patches(
    store: Any,
    reference: npt.ArrayLike,
    days: npt.ArrayLike,
    *,
    spec: Any,
    features: Sequence[str] | None = None,
    n_days: int = 40,
    per_day: int = 100,
    seed: int = 0,
    half_width: int = 5,
) -> dict[str, np.ndarray]:
    """Pre-training patches: random sub-pixels on random days, each with its pixel's pseudo-target.

    The pseudoproxy idea turned into a training signal: a gridded estimate that exists
    everywhere (e.g. ERA5-Land θ_eq, :func:`smengine.pseudoproxy.era5_land_theta_eq`) gives a
    target at any pixel, so the network can first learn the covariates' relation to soil
    moisture over the whole tile and then be fine-tuned on the stations (``train(...,
    pretrain=pseudo_patches(...))``).

    Parameters
    ----------
    store : TileStore
    reference : array_like, shape (len(days), Py, Px)
        The pseudo-target on the tile's 1-km pixels.
    days : array_like of dates
        Days of ``reference`` (each must be in the tile).
    spec : FeatureSpec
    features : sequence of str, optional
    n_days, per_day : int
        Days drawn, and sub-pixels drawn per day (where the reference is finite).
    seed : int
    half_width : int

    Returns
    -------
    dict
        ``patches`` (n, F, p, p) float32 and ``target`` (n,) float64, for ``train(pretrain=…)``.
    """
    fb, _names, cols = _features_of(spec, features, store)
    ref = np.asarray(reference, dtype=np.float64)
    d = np.asarray(days, dtype="datetime64[D]")
    Py, Px = store.grid.shape
    if ref.shape != (d.size, Py, Px):
        raise ValidationError(f"reference has shape {ref.shape}, expected {(d.size, Py, Px)}")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(d.size, size=min(int(n_days), d.size), replace=False))
    k, s = int(half_width), store.grid.subpixel
    sw = fb.swi() if fb.swi_names else None
    patches, target = [], []
    for i in pick:
        t = store.day_index(d[i])
        x = fb.day(int(t), swi=sw)[cols]
        F, H, W = x.shape
        xp = np.full((F, H + 2 * k, W + 2 * k), np.nan, np.float32)
        xp[:, k : k + H, k : k + W] = x
        ok = np.flatnonzero(np.isfinite(np.repeat(np.repeat(ref[i], s, 0), s, 1)).ravel())
        if ok.size == 0:
            continue
        sub = rng.choice(ok, size=min(int(per_day), ok.size), replace=False)
        for j in sub:
            r, c = divmod(int(j), W)
            patches.append(xp[:, r : r + 2 * k + 1, c : c + 2 * k + 1])
            target.append(ref[i, r // s, c // s])
    if not patches:
        raise DataError("pseudo_patches: the reference has no finite value on the drawn days")
    return {"patches": np.stack(patches), "target": np.asarray(target)}
