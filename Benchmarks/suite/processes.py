"""Starting and stopping what a benchmark measures: kvd on a private copy of Config/bench.yaml, and
the raw ZeroMQ echo (Benchmarks/echo) on the same transports."""
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def release_binary(name: str) -> Path:
    return Path(os.environ.get("KVD_BUILD_DIR", ROOT / ".build" / "release")) / name


@dataclass
class Endpoints:
    ipc: str
    tcp: str

    def by_transport(self, transport: str) -> str:
        return self.ipc if transport == "ipc" else self.tcp


def free_tcp_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """kvd on a copy of Config/bench.yaml with its own socket, port and shm name, so a benchmark
    never touches a daemon someone else is running."""

    def __init__(self, tag: str = "bench", config: Path = ROOT / "Config" / "bench.yaml"):
        self.dir = Path(tempfile.mkdtemp(prefix=f"kvd-{tag}-"))
        self.endpoints = Endpoints(f"ipc://{self.dir}/kvd.sock", f"tcp://127.0.0.1:{free_tcp_port()}")
        self.shm = f"/kvd-{tag}-{os.getpid()}"
        text = config.read_text()
        text = text.replace('"ipc:///tmp/kvd-bench.sock"', f'"{self.endpoints.ipc}"')
        text = text.replace('"tcp://127.0.0.1:5610"', f'"{self.endpoints.tcp}"')
        text = text.replace('shm_name: "/kvd-bench"', f'shm_name: "{self.shm}"')
        self.config = self.dir / "bench.yaml"
        self.config.write_text(text)
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([str(release_binary("kvd")), "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sock = Path(self.endpoints.ipc[len("ipc://"):])
        deadline = time.monotonic() + 30
        while not sock.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvd exited: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("kvd did not bind its socket within 30 s")
            time.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict:
        """Resident bytes: total, of the shm arena, and the rest (the daemon's own memory)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        kb = {k: int(v) * 1024 for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile|RssShmem):\s+(\d+) kB", status, re.M)}
        return {"rss": kb["VmRSS"], "shmem": kb["RssShmem"], "anon": kb["RssAnon"], "file": kb["RssFile"],
                "outside_arena": kb["VmRSS"] - kb["RssShmem"]}

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.config.unlink(missing_ok=True)


class Echo:
    """The raw ZeroMQ ROUTER echo in Swift, bound to an ipc and a tcp endpoint."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="kvd-echo-"))
        self.endpoints = Endpoints(f"ipc://{self.dir}/echo.sock", f"tcp://127.0.0.1:{free_tcp_port()}")

    def __enter__(self):
        self.proc = subprocess.Popen([str(release_binary("kvd-echo")), self.endpoints.ipc, self.endpoints.tcp],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"kvd-echo did not start: {self.proc.stderr.read().decode()}")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)
