"""Sections 1, 2 and 4 from the C client: runs Benchmarks/c's kvd-bench-client and reads its JSON
lines (one object per measured row)."""
import json
import subprocess

from .processes import ROOT

BINARY = ROOT / "Benchmarks" / "c" / "build" / "kvd-bench-client"


def run(*args: str) -> list:
    out = subprocess.run([str(BINARY), *args], check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def rtt(kvd: str, echo: str, n: int) -> list:
    return run("rtt", "--kvd", kvd, "--echo", echo, "--n", str(n))


def data(kvd: str, echo: str, mib: str, repeats: int) -> list:
    return run("data", "--kvd", kvd, "--echo", echo, "--model", "llama3-8b-slice", "--mib", mib, "--repeats", str(repeats))


def scale(kvd: str, pid: int, clients: int, sequences: int, seconds: float) -> dict:
    rows = run("scale", "--kvd", kvd, "--model", "smollm2-135m", "--clients", str(clients),
               "--sequences", str(sequences), "--seconds", str(seconds), "--kvd-pid", str(pid))
    return rows[0]
