"""Build the Cython kernels in ``src/smengine/_ext``.

Metadata lives in ``pyproject.toml``; this file only declares ``ext_modules``.
Nothing generated (``.c``) is committed: the sources are cythonized at build time.

Environment switches
--------------------
SMENGINE_NO_OPENMP=1   build without OpenMP (kernels then run on one thread)
CYTHON_COVERAGE=1      build with line tracing for coverage measurement
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
EXT_DIR = Path("src") / "smengine" / "_ext"

# Commands that need no compiled code (pyogrio/cftime pattern).
_NO_BUILD = {"sdist", "egg_info", "clean", "--version", "--help", "dist_info"}


def _openmp_flags() -> tuple[list[str], list[str]]:
    """Return (compile, link) flags for OpenMP, or empty lists if it does not work."""
    if os.environ.get("SMENGINE_NO_OPENMP"):
        return [], []
    cc = sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()[0]
    if shutil.which(cc) is None:
        return [], []
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "t.c"
        c.write_text(src)
        try:
            subprocess.run(
                [cc, "-fopenmp", str(c), "-o", str(Path(tmp) / "t")],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError):
            print("smengine: OpenMP not available, kernels will run on one thread", file=sys.stderr)
            return [], []
    return ["-fopenmp"], ["-fopenmp"]


def _extensions() -> list[Extension]:
    import numpy as np
    from Cython.Build import cythonize

    omp_c, omp_l = _openmp_flags()
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
    directives = {
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "initializedcheck": False,
        "cdivision": True,
        "embedsignature": True,
        "freethreading_compatible": True,
    }
    if os.environ.get("CYTHON_COVERAGE"):
        directives["linetrace"] = True
        macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]

    exts = [
        Extension(
            f"smengine._ext.{pyx.stem}",
            [str(pyx)],
            include_dirs=[np.get_include(), str(EXT_DIR)],
            define_macros=macros,
            # fp-contract=off: no FMA contraction in the target("avx512f") kernels, so every
            # instruction-set path gives the same bytes
            extra_compile_args=["-O3", "-fno-trapping-math", "-ffp-contract=off", *omp_c],
            extra_link_args=omp_l,
        )
        for pyx in sorted(EXT_DIR.glob("*.pyx"))
    ]
    return cythonize(exts, compiler_directives=directives, include_path=[str(EXT_DIR)])


if __name__ == "__main__":
    needs_build = not (set(sys.argv[1:]) & _NO_BUILD)
    setup(ext_modules=_extensions() if needs_build else [])
