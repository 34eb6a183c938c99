"""Helpers for the /metrics tests: a daemon with metrics on, its bound address, scraping, and a
strict parser of Prometheus' text exposition format (0.0.4)."""
from __future__ import annotations

import math
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

LISTEN_LINE = re.compile(r"metrics: serving http://([0-9.]+|\[[0-9a-f:]+\]):(\d+)/metrics")
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?,?\}})? (\S+)(?: (-?\d+))?$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def metrics_on(listen: str = "127.0.0.1:0"):
    """``make_daemon`` mutator: metrics on (any free port by default)."""
    def mutate(cfg: dict) -> None:
        cfg["metrics"] = {"enabled": True, "listen": listen}
    return mutate


def metrics_address(daemon, timeout_s: float = 10.0) -> str:
    """"host:port" the daemon says it serves /metrics on (its info log line)."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = LISTEN_LINE.search(daemon.stderr())
        if m:
            return f"{m.group(1)}:{m.group(2)}"
        if time.monotonic() > deadline:
            raise AssertionError(f"no 'metrics: serving' line in the log:\n{daemon.stderr()}")
        time.sleep(0.05)


def http_get(url: str, timeout_s: float = 5.0, method: str = "GET") -> tuple[int, dict, str]:
    """(status, headers, body) of a GET (or `method`), for any status."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout_s) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def scrape(address: str) -> str:
    status, headers, body = http_get(f"http://{address}/metrics")
    assert status == 200, f"GET /metrics answered {status}: {body[:200]}"
    assert headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"), headers
    return body


def parse_exposition(text: str) -> tuple[dict, dict]:
    """Strictly parses the text format: every line is a HELP, a TYPE or a sample; each family is
    declared once, before its samples. Returns ({family: type}, {(name, frozenset(labels)): value})."""
    types: dict = {}
    samples: dict = {}
    helped: set = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(NAME, name) and name not in helped, f"line {n}: {line!r}"
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            assert len(parts) == 4 and re.fullmatch(NAME, parts[2]) and parts[3] in TYPES, f"line {n}: {line!r}"
            assert parts[2] not in types, f"line {n}: {parts[2]} declared twice"
            types[parts[2]] = parts[3]
            continue
        assert not line.startswith("#"), f"line {n}: unexpected comment {line!r}"
        m = SAMPLE.match(line)
        assert m, f"line {n}: not a valid sample: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = family_of(name, types)
        assert family in types, f"line {n}: {name} has no # TYPE before it"
        pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
        v = float(value)  # "+Inf", "NaN" and exponents are valid floats too
        assert not math.isnan(v) or types[family] == "gauge", f"line {n}: NaN in a {types[family]}"
        key = (name, pairs)
        assert key not in samples, f"line {n}: duplicate series {line!r}"
        samples[key] = v
    return types, samples


def family_of(sample_name: str, types: dict) -> str:
    """The family a sample belongs to (histograms' _bucket/_sum/_count samples belong to theirs)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name[: -len(suffix)]
        if sample_name.endswith(suffix) and types.get(base) == "histogram":
            return base
    return sample_name


def value(samples: dict, name: str, **labels) -> float:
    """The one sample `name` whose labels include `labels`."""
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples match"
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_tcp_sockets(pid: int) -> list[str]:
    """'address:port' of every TCP socket process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(f"{fields[1].split(':')[0]}:{int(fields[1].split(':')[1], 16)}")
    return found
