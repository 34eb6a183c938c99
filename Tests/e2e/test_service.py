"""Running under systemd: the bundled unit passes `systemd-analyze verify`, and kvd speaks the
sd_notify protocol to $NOTIFY_SOCKET — READY=1 once serving, RELOADING=1 then READY=1 around a
SIGHUP, STOPPING=1 when it drains — and does nothing of the sort without the variable."""
from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import KVD_BIN, REPO

UNIT = REPO / "Config" / "systemd" / "kvd.service"


def receive(sock: socket.socket) -> dict:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines() if line)


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # the daemon inherits the environment
    yield sock
    sock.close()


def test_ready_reload_and_stop_are_notified(make_daemon, notify_socket):
    d = make_daemon()
    ready = receive(notify_socket)
    assert ready["READY"] == "1" and int(ready["MAINPID"]) == d.proc.pid
    assert ready["STATUS"].startswith("serving on ipc://")
    d.proc.send_signal(signal.SIGHUP)
    reloading = receive(notify_socket)
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert receive(notify_socket)["READY"] == "1"
    with d.client() as c:
        c.hello()  # still serving after the reload
    assert d.stop() == 0
    assert receive(notify_socket)["STOPPING"] == "1"


def test_abstract_notify_socket(make_daemon, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"kvd-test-notify-{id(sock)}"
    sock.bind("\0" + name)
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        d = make_daemon()
        assert receive(sock)["READY"] == "1"
        assert d.stop() == 0
    finally:
        sock.close()


def test_a_missing_manager_socket_changes_nothing(make_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    d = make_daemon()
    with d.client() as c:
        c.hello()
    assert d.stop() == 0


def test_unit_file_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: run scripts/install-deps.sh (it installs systemd)"
    text = UNIT.read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"):
        assert line in text, line
    # Stopping waits for the drain (server.drain_seconds, 30 s by default) with room to spare.
    assert int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1)) > 30
    # The unit names /usr/local/bin/kvd; verify it against the binary under test.
    unit = tmp_path / "kvd.service"
    unit.write_text(text.replace("/usr/local/bin/kvd", str(KVD_BIN)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    problems = [l for l in (out.stdout + out.stderr).splitlines() if "kvd.service" in l]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
