"""CompiledForest beyond 256 features: the leaf-box table and the block layout hold feature
indices in 8 bits, so they refuse such forests with a ConfigError (not a crash, not a silent
truncation), and predict with the default reuse falls back to plain walks, equal to scikit-learn.

Run in a subprocess, so that a crash of the interpreter is a test failure, not a lost run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor
    from smengine.errors import ConfigError
    from smengine.model import CompiledForest
    from smengine.model._compiled import MAX_BOX_FEATURES

    rng = np.random.default_rng(0)
    X = rng.random((400, 300), dtype=np.float32)
    y = X[:, 0] + X[:, 299] + 0.5 * X[:, 257] + 0.1 * X[:, 150]
    rf = RandomForestRegressor(6, max_depth=8, random_state=0, n_jobs=1).fit(X, y)
    used = {int(f) for t in rf.estimators_ for f in t.tree_.feature if f >= 0}
    assert max(used) >= MAX_BOX_FEATURES == 256, sorted(used)  # splits on features past 255
    cf = CompiledForest.from_sklearn(rf)
    assert cf.n_features == 300 and cf._mode(True) == 1 and cf._mode("lanes") == 1
    want = rf.predict(X)
    for reuse in (True, "lanes", "box", False):
        got = cf.predict(X, reuse=reuse)
        assert np.array_equal(got, want), (reuse, np.abs(got - want).max())
    mean, sd = cf.predict_with_spread(X)
    assert np.array_equal(mean, want)
    np.testing.assert_allclose(sd, np.stack([t.predict(X) for t in rf.estimators_]).std(0), rtol=0, atol=1e-12)
    for call in (cf.leaf_boxes, cf.blocks, lambda: cf._kernel_tables(3)):
        try:
            call()
        except ConfigError as exc:
            assert "at most 256 features" in str(exc) and "has 300" in str(exc), exc
        else:
            raise AssertionError(f"{call} should refuse 300 features")
    print("OK")
    """
)


def test_forest_with_300_features_refuses_leaf_boxes_and_predicts_by_walks():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode} (a negative code is a crash)\n{r.stdout}\n{r.stderr}"
    assert r.stdout.strip().endswith("OK"), r.stdout
