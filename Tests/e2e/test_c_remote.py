"""The C client's remote tier (kvd_client_restore, kvd_client_remote_stats) against a real Redis
(docs/REMOTE.md).

- Remote tier on: the C program fills sequences until the memory manager evicts some to Redis,
  restores them (from the client that created them, whose layout it remembers, and from a second
  client, which learns it), reads them back bit-exact, appends zero-copy, and checks the remote
  figures and the refusals (a live id: ALREADY_EXISTS; an unknown id: NOT_FOUND). Its figures
  then match the Python client's Stats of the same daemon, and Redis holds no copy any more.
- Remote tier off: Restore is FAILED_PRECONDITION, the figures say enabled 0.

Drives Clients/c/build/test_remote (tests/test_remote.c), built with ``make -C Clients/c``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from c_build import build_c_client
from conftest import REPO
from memory_helpers import memory_config, wait_until
from redis_helpers import RedisNode

C_DIR = REPO / "Clients" / "c"
REMOTE_BIN = C_DIR / "build" / "test_remote"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)
FIGURES = re.compile(r"^REMOTE offloaded=(\d+) restored=(\d+) failures=(\d+) corrupted=(\d+)$", re.M)
KEY_PREFIX = "kvdctest:"


@pytest.fixture(scope="module")
def c_build():
    build_c_client(REMOTE_BIN)


@pytest.fixture
def redis(tmp_path):
    node = RedisNode(tmp_path).start()
    yield node
    node.stop()


def run_program(mode: str, endpoint: str, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run([str(REMOTE_BIN), mode, endpoint], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    sys.stdout.write(p.stdout)  # shown by pytest on failure (and with -s)
    m = SUMMARY.findall(p.stdout)
    assert m, f"no 'N passed, M failed' line (exit {p.returncode}):\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}"
    assert p.returncode == 0 and int(m[-1][1]) == 0 and int(m[-1][0]) == 1, \
        f"C remote test failed (exit {p.returncode}):\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}"
    return p


def test_c_restore_evicted_sequences(c_build, make_daemon, redis):
    def mutate(cfg):
        # Eviction only (no compression), so what goes to Redis is exactly what was appended.
        memory_config(cfg, cfg["server"]["endpoints"][0], compress_policy="", high=0.9, low=0.8)
        cfg["remote"] = {"enabled": True, "nodes": [redis.address], "key_prefix": KEY_PREFIX,
                         "connect_timeout_ms": 200, "command_timeout_ms": 500}
    d = make_daemon(mutate)
    p = run_program("on", d.endpoint)
    figures = FIGURES.findall(p.stdout)
    assert figures, p.stdout[-4000:]
    offloaded, restored, failures, corrupted = map(int, figures[-1])
    assert offloaded >= 2 and restored == offloaded and failures == 0 and corrupted == 0
    # The C figures are the daemon's, as the Python client reads them.
    with d.client() as c:
        r = c.stats().remote
        assert (r.enabled, r.offloaded, r.restored, r.restore_failures, r.restore_corrupted) == \
            (True, offloaded, restored, failures, corrupted)
        assert c.stats().memory.evictions >= offloaded
    # Every restored copy is deleted from Redis (asynchronously).
    wait_until(lambda: not redis.keys(f"{KEY_PREFIX}*"), 5.0, "restored copies to be deleted from Redis")


def test_c_restore_without_a_remote_tier(c_build, make_daemon):
    d = make_daemon()
    run_program("off", d.endpoint, timeout=60)


def test_c_restore_under_valgrind(c_build, make_daemon, redis, tmp_path):
    """The same run under valgrind memcheck: no errors, nothing leaked."""
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed (apt install valgrind)")

    def mutate(cfg):
        memory_config(cfg, cfg["server"]["endpoints"][0], compress_policy="", high=0.9, low=0.8)
        cfg["remote"] = {"enabled": True, "nodes": [redis.address], "key_prefix": KEY_PREFIX,
                         "connect_timeout_ms": 200, "command_timeout_ms": 500}
    d = make_daemon(mutate)
    log = tmp_path / "valgrind.log"
    p = subprocess.run(["valgrind", "--tool=memcheck", "--leak-check=full",
                        "--show-leak-kinds=definite,indirect,possible",
                        "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=99",
                        f"--log-file={log}", str(REMOTE_BIN), "on", d.endpoint],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    text = log.read_text(errors="replace")
    assert p.returncode == 0 and SUMMARY.findall(p.stdout)[-1] == ("1", "0"), \
        f"exit {p.returncode}:\n{p.stdout[-4000:]}\n{text[-6000:]}"
    assert re.search(r"ERROR SUMMARY: 0 errors", text), text[-6000:]
