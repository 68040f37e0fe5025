"""smengine.nn without PyTorch: telling a network file from a forest, and the install hint."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from smengine.errors import ConfigError
from smengine.nn import is_nn_file, is_nn_model


def test_a_network_file_is_told_from_a_forest_file(tmp_path):
    z = tmp_path / "m.smnn.pt"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("m/data.pkl", b"")
    h5 = tmp_path / "m.smf.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert is_nn_file(z) and not is_nn_file(h5) and not is_nn_file(tmp_path / "missing.pt")
    assert not is_nn_model(object()) and not is_nn_model("m.smnn.pt")


def test_without_torch_the_package_imports_and_says_how_to_install(monkeypatch):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import smengine.engine, smengine.nn, smengine.nn._model, smengine.nn._runner, smengine.nn._compare\n"
        "from smengine.errors import ConfigError\n"
        "for f in (lambda: smengine.nn.train, lambda: smengine.nn._model.load('x.smnn.pt')):\n"
        "    try:\n"
        "        f()\n"
        "    except ConfigError as exc:\n"
        "        assert \"pip install 'smengine[nn]'\" in str(exc), exc\n"
        "    else:\n"
        "        raise SystemExit('no error')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    monkeypatch.setitem(sys.modules, "torch", None)
    from smengine.nn._detect import require_torch

    with pytest.raises(ConfigError, match="torch==2.13.0"):
        require_torch()
