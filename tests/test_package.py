"""The package's shape: lazy submodules, a docstring map of every one, applications apart."""

from __future__ import annotations

import subprocess
import sys

import smengine


def test_submodules_are_lazy_listed_and_mapped() -> None:
    code = (
        "import sys, smengine\n"
        "heavy = [m for m in ('smengine.engine', 'smengine.model', 'smengine.twin', 'sklearn', 'xarray') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert smengine.engine.predict.__module__ == 'smengine.engine' and 'smengine.engine' in sys.modules\n"
        "print(sorted(set(smengine.SUBMODULES) - set(dir(smengine))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
    doc = smengine.__doc__ or ""
    for name in smengine.SUBMODULES:
        assert f"\n{name} " in doc, f"{name} missing from the module map in smengine's docstring"
    # the applications are packages of their own, listed apart from the library
    library, apps = doc.split("Applications")
    for app in ("twin", "demo", "experiments"):
        assert f"\n{app} " in apps and f"\n{app} " not in library
        assert getattr(smengine, app).__path__  # a package
    try:
        smengine.nonexistent  # noqa: B018
    except AttributeError as exc:
        assert "nonexistent" in str(exc)
    else:
        raise AssertionError("unknown attributes must raise AttributeError")
