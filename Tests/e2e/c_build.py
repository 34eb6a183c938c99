"""Builds the C client (``make -C Clients/c all``: library, kvdclient.pc, test programs, examples;
-Werror) once for the test files that drive its programs."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

C_DIR = REPO / "Clients" / "c"
BUILD = C_DIR / "build"


def build_c_client(*expected: Path) -> Path:
    """Runs the build and checks it produced `expected`; returns the build folder."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.fail("make and gcc are needed for the C client tests")
    p = subprocess.run(["make", "-C", str(C_DIR), "-j2", "all"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"make failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    for f in expected:
        assert f.exists(), f"make did not produce {f}"
    return BUILD
