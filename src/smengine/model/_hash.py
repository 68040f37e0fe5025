"""Content hash of a fitted scikit-learn forest (independent of pickling or treelite)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["forest_hash"]


def forest_hash(rf: Any) -> str:
    """SHA-256 of a fitted forest's structure and leaf values.

    Hashes, tree by tree in order, ``children_left``, ``children_right``, ``feature``,
    ``threshold`` and ``value`` (little-endian, fixed dtypes) plus the number of features,
    so two forests hash equal exactly when they predict identically node for node.
    It is the cache key of :class:`~smengine.model.CompiledForest` and the ``content_hash``
    of the model card.

    Parameters
    ----------
    rf : sklearn.ensemble.RandomForestRegressor or ExtraTreesRegressor
        A fitted forest (anything with ``estimators_`` holding ``tree_``).

    Returns
    -------
    str
        ``"sha256:<64 hex digits>"``.
    """
    h = hashlib.sha256()
    h.update(f"n_features={int(rf.n_features_in_)};n_trees={len(rf.estimators_)};".encode())
    for est in rf.estimators_:
        t = est.tree_
        for arr, dt in (
            (t.children_left, "<i8"),
            (t.children_right, "<i8"),
            (t.feature, "<i8"),
            (t.threshold, "<f8"),
            (t.value, "<f8"),
        ):
            a = np.ascontiguousarray(np.asarray(arr), dtype=dt)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return "sha256:" + h.hexdigest()
