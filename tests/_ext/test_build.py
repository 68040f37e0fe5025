"""The C side builds warning-free under current compilers' defaults (GCC >= 14).

GCC 14 turned ``incompatible-pointer-types``, ``int-conversion`` and
``implicit-function-declaration`` into errors; ``.ci/run`` installs the package with those
three as ``-Werror`` (so the Cython-generated C is checked there); here the hand-written
headers are compiled on their own with ``-Wall -Wextra -Werror`` on top, and every C
integer type is spelled once (``_typedefs.pxd``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

EXT = Path(__file__).resolve().parents[2] / "src" / "smengine" / "_ext"
GCC14_ERRORS = ("-Werror=incompatible-pointer-types", "-Werror=int-conversion", "-Werror=implicit-function-declaration")


def _cc() -> str:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc})")
    return cc


#: headers the kernels include (_forest_blocks.h is a fragment that _forest.h includes per instruction set)
HEADERS = sorted({m for p in EXT.glob("*.p[xy]?") for m in re.findall(r'extern from "(\w+\.h)"', p.read_text())})


def test_every_header_is_checked() -> None:
    assert {"_forest.h", "_fpavg.h"} <= set(HEADERS)


@pytest.mark.skipif(sys.platform != "linux", reason="the kernels' build is tested on Linux")
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_warning_free(header: str, tmp_path: Path) -> None:
    src = tmp_path / "t.c"
    src.write_text(f'#include "{header}"\n')
    cmd = [
        _cc(),
        "-std=c11",
        "-fsyntax-only",
        "-Wall",
        "-Wextra",
        "-Werror",
        *GCC14_ERRORS,
        "-fopenmp",
        f"-I{EXT}",
        str(src),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr, r.stderr


def test_header_check_can_fail(tmp_path: Path) -> None:
    # the same command rejects a pointer mismatch of the kind GCC 14 makes an error
    src = tmp_path / "bad.c"
    src.write_text("#include <stdint.h>\nvoid f(const int64_t *p);\nvoid g(const long long *q) { f(q); }\n")
    r = subprocess.run([_cc(), "-std=c11", "-fsyntax-only", *GCC14_ERRORS, str(src)], capture_output=True, text=True)
    assert r.returncode != 0 and "incompatible-pointer-types" in r.stderr


def test_one_spelling_per_integer_type() -> None:
    """Fixed-width integers come from _typedefs.pxd (<stdint.h> types), never ``long long``."""
    offenders = []
    for p in sorted([*EXT.glob("*.pyx"), *EXT.glob("*.pxd"), *EXT.glob("*.h")]):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#")[0] if p.suffix in (".pyx", ".pxd") else re.sub(r"/\*.*?\*/|//.*", "", line)
            if re.search(r"\blong\s+long\b|\bunsigned\s+char\b|\bnpy_int(32|64)\b", code):
                offenders.append(f"{p.name}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    typedefs = (EXT / "_typedefs.pxd").read_text()
    for t in ("int32_t", "int64_t", "uint8_t"):
        assert re.search(rf"ctypedef _c_{t[:-2]} {t}\b", typedefs), t
