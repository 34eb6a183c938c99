"""The C client's test program built with AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer,
on by default with ASan), run against real daemons (scripts/sanitizers.sh).

``KVD_C_ASAN_BIN`` names the sanitized ``test_kvd_client`` (the script builds it into
``.build-asan/c-client`` with the normal Makefile, only ``B``, ``CC`` and ``CFLAGS`` overridden, so the
regular ``make -C Clients/c`` build is untouched). The cases are those of Tests/e2e/test_c_client.py
that run the test program — every call and bad input, both cross-language directions, a daemon
restart and stop under a live client — reused with the program swapped. Built with
``-fno-sanitize-recover=all``, so any report makes the program exit non-zero and the case fail; the
report is in the failure message (the program's stderr).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import test_c_client as cc  # noqa: E402
from conftest import kvd_bin, make_daemon  # noqa: E402,F401  (fixtures of the e2e suite)
from test_c_client import c_daemon  # noqa: E402,F401

ASAN_BIN = Path(os.environ.get("KVD_C_ASAN_BIN", cc.REPO / ".build-asan" / "c-client" / "test_kvd_client"))


@pytest.fixture(autouse=True)
def sanitized_program(monkeypatch):
    if not ASAN_BIN.is_file():
        pytest.fail(f"no sanitized C test program at {ASAN_BIN}; run scripts/sanitizers.sh")
    monkeypatch.setattr(cc, "TEST_BIN", ASAN_BIN)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1")
    monkeypatch.setenv("UBSAN_OPTIONS", "print_stacktrace=1")


def test_c_suite(c_daemon):
    cc.test_c_suite(None, c_daemon)


def test_cross_c_appends_python_reads(c_daemon, tmp_path):
    cc.test_cross_c_appends_python_reads(None, c_daemon, tmp_path)


def test_cross_python_appends_c_reads(c_daemon, tmp_path):
    cc.test_cross_python_appends_c_reads(None, c_daemon, tmp_path)


def test_daemon_restart_and_stop_mid_session(c_daemon):
    cc.test_daemon_restart_and_stop_mid_session(None, c_daemon)
