"""The Python client's type hints: mypy finds no error in the ``kvd`` package (every function
annotated), and the package ships its ``py.typed`` marker so users' type checkers read them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PY = Path(__file__).resolve().parents[2] / "Clients" / "python"


def test_mypy_finds_no_error_in_kvd():
    pytest.importorskip("mypy", reason="pip install mypy to check the client's type hints")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--disallow-untyped-defs",
         "--disallow-incomplete-defs", "--no-implicit-optional", "--no-incremental", "-p", "kvd"],
        cwd=PY, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def test_py_typed_ships_with_the_package():
    assert (PY / "kvd" / "py.typed").is_file()
    text = (PY / "pyproject.toml").read_text()
    assert '"kvd" = ["py.typed"]' in text
