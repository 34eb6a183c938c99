"""The C client across a restart of a durable kvd (SIGKILL, then started again on the same config:
it adopts its segment). The same client, never reconnected by hand, carries on: it rejoins the new
daemon process (Hello again, KeepAlive-adopting the sequences it created) and sends a request the
new daemon refused as "not bound to a tenant" once more.

- Open tenant, short leases, keep-alive on: while the program is idle its keep-alive thread
  rejoins, so its sequences outlive the lease and grace of the restarted daemon, which releases a
  sequence nobody adopted; then it appends and reads back bit-exact.
- Token tenant, keep-alive off: the first call after the restart would be PERMISSION_DENIED; it
  succeeds, and the data reads back bit-exact.

Drives Clients/c/build/test_restart (tests/test_restart.c), built with ``make -C Clients/c``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from c_build import build_c_client
from conftest import MODEL_F16, REPO, START_TIMEOUT_S, Client, ErrorCode, KvdError, make_kv
from memory_helpers import error_code

C_DIR = REPO / "Clients" / "c"
RESTART_BIN = C_DIR / "build" / "test_restart"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)
LEASE_S, GRACE_S = 1, 1
# The manager notices an expired lease or grace on its next pass; allow it a few seconds beyond.
RELEASE_DEADLINE_S = LEASE_S + GRACE_S + 8
TOKEN = "restart-token-0123456789abcdef"


@pytest.fixture(scope="module")
def c_build():
    build_c_client(RESTART_BIN)


def durable(cfg: dict) -> None:
    workdir = cfg["server"]["endpoints"][0][len("ipc://"):].rsplit("/", 1)[0]
    cfg["durability"] = {"enabled": True, "directory": workdir}


class Program:
    """test_restart running under the test: read its lines up to READY, then let it finish."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([str(RESTART_BIN), *map(str, args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.lines = []

    def until(self, want: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if line.strip() == want:
                return
        self.proc.kill()
        pytest.fail(f"test_restart did not print {want!r}:\n{''.join(self.lines)}\n"
                    f"{self.proc.stderr.read()}")

    def value(self, name: str) -> list:
        return [int(m) for line in self.lines for m in re.findall(rf"\b{name}=(\d+)", line)]

    def finish(self) -> str:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        out, err = self.proc.communicate(timeout=60)
        self.lines.extend(out.splitlines(keepends=True))
        sys.stdout.write("".join(self.lines))  # shown by pytest on failure
        m = SUMMARY.findall(out)
        assert self.proc.returncode == 0 and m and m[-1] == ("1", "0"), \
            f"test_restart failed (exit {self.proc.returncode}):\n{''.join(self.lines)}\n{err}"
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_open_tenant_keepalive_thread_rejoins(c_build, make_daemon):
    def mutate(cfg):
        durable(cfg)
        cfg["memory"].update(lease_seconds=LEASE_S, orphan_grace_seconds=GRACE_S)

    d = make_daemon(mutate)
    prog = Program("open", d.endpoint)
    try:
        prog.until("READY kill")
        [a], [b] = prog.value("A"), prog.value("B")
        # A sequence nobody will adopt: made just before the kill by a client that then goes.
        with Client(d.endpoint, keepalive=False) as py:
            control = py.create_sequence(MODEL_F16)
            k, v = make_kv(MODEL_F16, 6, seed=5)
            py.append(control, k, v)
            assert py.stats().sequences == 3
        d.stop(signal.SIGKILL)
        d.start()
        assert "adopted shm" in d.stderr()
        # Only counts from here on: naming a sequence would make this connection its owner.
        with Client(d.endpoint, keepalive=False) as py:
            restarted_instance = py.hello().instance_id
            deadline = time.monotonic() + RELEASE_DEADLINE_S
            while py.stats().sequences > 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert py.stats().sequences == 2, "the unadopted sequence was not released"
            # Longer than a lease and its grace again: what the C client adopted stays.
            time.sleep(LEASE_S + GRACE_S + 1)
            assert py.stats().sequences == 2, "a sequence the C client created was released"
            assert error_code(lambda: py.stats(control)).code in (ErrorCode.EVICTED,
                                                                  ErrorCode.NOT_FOUND)
        prog.finish()  # appends to A, reads A and B back bit-exact
        before, after = prog.value("instance")
        assert before != after and after == restarted_instance, (before, after, restarted_instance)
        with Client(d.endpoint, keepalive=False) as py:
            assert py.stats(a).sequence.length == 10 and py.stats(b).sequence.length == 7
    finally:
        prog.kill()


def one_token_tenant(cfg: dict) -> None:
    durable(cfg)
    cfg["tenants"] = [{"name": "alpha", "token": TOKEN,
                       "shm": {"name": f"/kvd-test-a-{uuid.uuid4().hex[:12]}",
                               "size_bytes": "1MiB", "staging_bytes": "256KiB"}}]


def start_token_daemon(d) -> None:
    """Start and wait until the tenant's Hello is answered (an anonymous one never is)."""
    d.start(wait=False)
    deadline = time.monotonic() + START_TIMEOUT_S
    with Client(d.endpoint, timeout_ms=200, tenant="alpha", token=TOKEN, keepalive=False) as c:
        while True:
            assert d.proc.poll() is None, f"kvd exited during start:\n{d.stderr()}"
            try:
                c.hello()
                return
            except KvdError as e:
                assert e.code == ErrorCode.UNAVAILABLE and time.monotonic() < deadline, \
                    f"kvd did not come up: {e}\n{d.stderr()}"


def test_token_tenant_call_after_restart_is_transparent(c_build, make_daemon):
    d = make_daemon(one_token_tenant, start=False)
    segment = Path("/dev/shm") / d.config["tenants"][0]["shm"]["name"].lstrip("/")
    start_token_daemon(d)
    prog = Program("token", d.endpoint, "alpha", TOKEN)
    try:
        prog.until("READY kill")
        [a] = prog.value("A")
        d.stop(signal.SIGKILL)
        assert segment.exists()
        start_token_daemon(d)
        assert "adopted shm" in d.stderr()
        # The connection of the program is bound to no tenant in the new process:
        with Client(d.endpoint, keepalive=False) as anonymous:
            e = error_code(lambda: anonymous.stats())
            assert e.code == ErrorCode.PERMISSION_DENIED and "not bound to a tenant" in str(e)
        prog.finish()  # its next call succeeds, then the data reads back bit-exact
        before, after = prog.value("instance")
        assert before != after
        with Client(d.endpoint, tenant="alpha", token=TOKEN, keepalive=False) as py:
            assert py.hello().instance_id == after
            assert py.stats(a).sequence.length == 10
    finally:
        prog.kill()
        assert d.stop() == 0
        assert not segment.exists(), f"{segment} left behind after SIGTERM"
