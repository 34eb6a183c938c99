"""Real Redis servers for the remote-tier tests: a single node on a free loopback port, started
and stopped per test, and `redis-cli` to look inside it or corrupt a value on purpose."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisNode:
    """redis-server on 127.0.0.1:port, no persistence (a restart starts empty)."""

    def __init__(self, workdir: Path):
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            pytest.fail("redis-server and redis-cli are needed: run scripts/install-deps.sh")
        self.dir = workdir
        self.port = free_port()
        self.proc = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "RedisNode":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not answer PING within 10 s"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cli(self, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return r.stdout.strip()

    def keys(self, pattern: str = "*") -> list:
        out = self.cli("--scan", "--pattern", pattern)
        return [k for k in out.splitlines() if k]


def free_cluster_ports(n: int) -> list:
    """`n` loopback ports below the ephemeral range whose cluster-bus ports (+10000) are free too."""
    import random
    rng = random.Random()
    while True:
        ports = rng.sample(range(20000, 22767), n)
        ok = True
        for p in ports + [p + 10000 for p in ports]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return ports


class RedisCluster:
    """Three masters on loopback, through scripts/redis.sh (no replicas: a dead master's slots are
    unavailable until it comes back)."""

    def __init__(self, workdir: Path, script: Path):
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            pytest.fail("redis-server and redis-cli are needed: run scripts/install-deps.sh")
        self.dir, self.script = workdir, script
        self.ports = free_cluster_ports(3)

    @property
    def addresses(self) -> list:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def _run(self, *args) -> None:
        subprocess.run(["bash", str(self.script), *args], check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> "RedisCluster":
        self._run("start-cluster", str(self.dir), *map(str, self.ports))
        return self

    def kill(self, port: int) -> None:
        self._run("kill-node", str(self.dir), str(port))

    def stop(self) -> None:
        subprocess.run(["bash", str(self.script), "stop", str(self.dir)], timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cli(self, port: int, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10)
        return r.stdout.strip()

    def slot_owner(self, key: str) -> int:
        """The port of the master serving `key`'s slot."""
        slot = int(self.cli(self.ports[0], "CLUSTER", "KEYSLOT", key))
        for line in self.cli(self.ports[0], "CLUSTER", "NODES").splitlines():
            f = line.split()
            if "master" not in f[2]:
                continue
            port = int(f[1].split("@")[0].rsplit(":", 1)[1])
            for r in f[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return port
        raise AssertionError(f"no master serves slot {slot}")
