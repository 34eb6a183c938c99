"""The C client's Commit keep_reserved and kvd_pipeline_* against a real daemon with small pages
(only the tiny models), plainly and under valgrind memcheck: a 200-step pipelined decode loop reads
back bit-exact, Stats interleaves with commits in flight, close gives the unused tail back, a
refused commit is returned by the next call naming its step; a zero-copy append of >= 1 MiB (streaming
stores) reads back bit-exact (test_kvd_client.c, "pipeline")."""

from __future__ import annotations

import re
import shutil

import pytest

from c_build import build_c_client
from conftest import TINY_MODELS, model_entry
from test_c_client import BUILD, TEST_BIN, _summary, run_c


def _small_pages(cfg: dict) -> None:
    """The tiny models, plus one whose 43-token zero-copy append is >= 1 MiB (streaming stores)."""
    cfg["models"] = [m for m in cfg["models"] if m["name"] in TINY_MODELS]
    cfg["models"].append(model_entry("stream-f32", "f32", layers=4, kv_heads=4, q_heads=4, head_dim=256,
                                     page_tokens=16))
    cfg["arena"]["size_bytes"] = "24MiB"


@pytest.fixture(scope="module")
def c_build():
    return build_c_client(TEST_BIN, BUILD / "libkvdclient.a")


def test_c_pipeline(c_build, make_daemon):
    d = make_daemon(_small_pages)
    p = run_c(["pipeline", d.endpoint])
    assert p.returncode == 0 and _summary(p.stdout) == (5, 0), p.stdout[-6000:] + p.stderr[-2000:]


def test_c_pipeline_under_valgrind(c_build, make_daemon, tmp_path):
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed (apt install valgrind)")
    d = make_daemon(_small_pages)
    log = tmp_path / "valgrind.log"
    p = run_c(["pipeline", d.endpoint], timeout=300, prefix=(
        "valgrind", "--tool=memcheck", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
        "--error-exitcode=99", f"--log-file={log}"))
    text = log.read_text(errors="replace")
    assert p.returncode == 0 and _summary(p.stdout) == (5, 0), p.stdout[-4000:] + text[-6000:]
    assert re.search(r"ERROR SUMMARY: 0 errors", text), text[-8000:]
