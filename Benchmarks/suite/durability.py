"""Section 8: what crash safety costs (docs/DURABILITY.md). Two daemons run side by side on the same
config but for `durability.enabled`, on SmolLM2-135M f16 (30 layers × 3 KV heads, 16-token pages);
one Python client alternates the same operation between them, so both see the same machine.

Latency: an inline Append of 16 tokens to a fresh sequence, a decode step (Reserve 1 token, write it
into the arena, Commit) and a StreamingLLM Compact of a 1,024-token sequence (4 sinks + 256 recent),
each `repeats` times per daemon; ratio = median with the journal ÷ median without, same run.
Journal bytes: the journal file's growth per operation (no checkpoint in between).

Restart: a daemon with the journal holds N sequences (16 tokens each, on a 4-layer × 2-head model so
that 10,000 of them fit a small arena), is SIGKILLed and started again; the time from exec to its
first Hello answered, against the same for an empty arena (the baseline, same run), and the
daemon's own figure for adopting the segment (its log line).
"""
import json
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from kvd import Client

from .processes import Daemon, release_binary
from .summary import fmt, goal_mark, spread

MODEL = "smollm2-135m"
LAYERS, KV_HEADS, HEAD_DIM, PAGE_TOKENS = 30, 3, 64, 16
SMALL = "small-4x2"


def config(d: Daemon, durable: bool, arena_mib: int) -> dict:
    return {
        "server": {"endpoints": [d.endpoints.ipc], "max_message_bytes": "64MiB", "max_sequences": 20000},
        "arena": {"shm_name": d.shm, "size_bytes": f"{arena_mib}MiB", "staging_bytes": "8MiB"},
        "models": [{"name": MODEL, "layers": LAYERS, "kv_heads": KV_HEADS, "q_heads": 9, "head_dim": HEAD_DIM,
                    "dtype": "f16", "page_tokens": PAGE_TOKENS, "default_method": "streamingllm"},
                   {"name": SMALL, "layers": 4, "kv_heads": 2, "q_heads": 4, "head_dim": HEAD_DIM,
                    "dtype": "f16", "page_tokens": PAGE_TOKENS, "default_method": "streamingllm"}],
        "memory": {"compress_policy": "", "evict": False, "lease_seconds": 0},
        "durability": {"enabled": durable, "directory": str(d.dir), "checkpoint_bytes": "1GiB"},
        "log": {"level": "info"},
    }


class JournalDaemon(Daemon):
    def __init__(self, tag: str, durable: bool, arena_mib: int):
        super().__init__(tag)
        self.durable = durable
        self.config.write_text(json.dumps(config(self, durable, arena_mib), indent=1))

    @property
    def journal(self) -> Path:
        return self.dir / (self.shm.lstrip("/") + ".journal")

    def journal_bytes(self) -> int:
        return self.journal.stat().st_size if self.durable else 0

    def restart_after_kill(self) -> tuple:
        """SIGKILL, start again; (seconds from exec to the first Hello answered, adopt ms logged)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        t = time.perf_counter()
        self.proc = subprocess.Popen([str(release_binary("kvd")), "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with Client(self.endpoints.ipc, timeout_ms=100, keepalive=False) as c:
            while True:
                try:
                    c.hello()
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"kvd exited: {self.proc.stderr.read().decode()}")
        seconds = time.perf_counter() - t
        return seconds

    def adopt_ms(self) -> float:
        """The daemon's own 'adopted ... X ms' (read after SIGTERM, when stderr is complete)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        m = re.search(r"adopted shm .*?([0-9.]+) ms", self.proc.stderr.read().decode())
        return float(m.group(1)) if m else float("nan")


def kv(tokens: int, layers: int = LAYERS, heads: int = KV_HEADS, seed: int = 0):
    a = np.random.default_rng(seed).standard_normal((layers, heads, tokens, HEAD_DIM)).astype(np.float16)
    return a, a[::-1].copy()


def latencies(repeats: int) -> dict:
    with JournalDaemon("plain", False, 512) as off, JournalDaemon("journal", True, 512) as on, \
            Client(off.endpoints.ipc, timeout_ms=30000) as a, Client(on.endpoints.ipc, timeout_ms=30000) as b:
        k16, v16 = kv(16)
        k1, v1 = kv(1)
        kc, vc = kv(1024)
        times = {op: {"off": [], "on": []} for op in ("append", "decode", "compact")}
        bytes_per = {op: [] for op in times}
        for _ in range(repeats):
            for side, c, d in (("off", a, off), ("on", b, on)):
                seq = c.create_sequence(MODEL)
                j = d.journal_bytes()
                t = time.perf_counter()
                c.append(seq, k16, v16)
                times["append"][side].append(time.perf_counter() - t)
                if side == "on":
                    bytes_per["append"].append(d.journal_bytes() - j)
                j = d.journal_bytes()
                t = time.perf_counter()
                c.append(seq, k1, v1, zero_copy=True)  # Reserve, write into the arena, Commit
                times["decode"][side].append(time.perf_counter() - t)
                if side == "on":
                    bytes_per["decode"].append(d.journal_bytes() - j)
                c.append(seq, kc[:, :, :1007], vc[:, :, :1007])  # 1,024 tokens in all
                j = d.journal_bytes()
                t = time.perf_counter()
                c.compact(seq, "streamingllm", sinks=4, recent=256)
                times["compact"][side].append(time.perf_counter() - t)
                if side == "on":
                    bytes_per["compact"].append(d.journal_bytes() - j)
                c.release(seq)
    out = {}
    for op, sides in times.items():
        off_ms, on_ms = (statistics.median(sides[s]) * 1e3 for s in ("off", "on"))
        out[op] = {"off_ms": off_ms, "on_ms": on_ms, "ratio": on_ms / off_ms, "journal_bytes": statistics.median(bytes_per[op])}
    return out


def restart(counts) -> list:
    rows = []
    for n in counts:
        with JournalDaemon("restart", True, 64 + n * 8 * 4 // 1024 + 64) as d:
            with Client(d.endpoints.ipc, timeout_ms=30000) as c:
                empty_s = d.restart_after_kill()  # nothing held yet: the baseline start
                k, v = kv(16, 4, 2)
                for i in range(n):
                    seq = c.create_sequence(SMALL)
                    c.append(seq, k, v)
                journal = d.journal_bytes()
            held_s = d.restart_after_kill()
            with Client(d.endpoints.ipc, timeout_ms=30000) as c:
                assert c.stats().sequences == n
            adopt_ms = d.adopt_ms()
        rows.append({"sequences": n, "empty_s": empty_s, "held_s": held_s, "adopt_ms": adopt_ms,
                     "journal_bytes_per_sequence": journal / max(n, 1)})
    return rows


def measure(repeats: int, counts) -> list:
    return [{"kind": "latency", **latencies(repeats)}, {"kind": "restart", "rows": restart(counts)}]


def table(runs: list) -> list:
    lines = ["### 8. Durability (SmolLM2-135M f16; the same operation alternated between a daemon with the journal and one "
             "without, same run; ratio = with ÷ without)", "",
             "| operation | without, ms | with journal, ms | ratio | journal bytes per operation | goal ≤ 1.2× |",
             "|---|---:|---:|---:|---:|---|"]
    names = {"append": "inline Append, 16 tokens", "decode": "decode step: Reserve 1 + write + Commit",
             "compact": "Compact 1,024 → 260 tokens (StreamingLLM)"}
    lat = [next(r for r in run if r["kind"] == "latency") for run in runs]
    for op, name in names.items():
        ratio = spread([r[op]["ratio"] for r in lat])
        lines.append(f"| {name} | {fmt(spread([r[op]['off_ms'] for r in lat]))} | {fmt(spread([r[op]['on_ms'] for r in lat]))} | "
                     f"{fmt(ratio)}× | {fmt(spread([r[op]['journal_bytes'] for r in lat]), 0)} | {goal_mark(ratio['median'] <= 1.2)} |")
    lines += ["", "| sequences held (16 tokens, 4 layers × 2 heads) | journal bytes per sequence | start, empty arena, s | "
              "start after SIGKILL, adopting, s | daemon's adopt time, ms | goal < 1 s |", "|---:|---:|---:|---:|---:|---|"]
    by_n = {}
    for run in runs:
        for r in next(x for x in run if x["kind"] == "restart")["rows"]:
            by_n.setdefault(r["sequences"], []).append(r)
    for n, rs in sorted(by_n.items()):
        held = spread([r["held_s"] for r in rs])
        lines.append(f"| {n} | {fmt(spread([r['journal_bytes_per_sequence'] for r in rs]), 0)} | "
                     f"{fmt(spread([r['empty_s'] for r in rs]))} | {fmt(held)} | {fmt(spread([r['adopt_ms'] for r in rs]), 1)} | "
                     f"{goal_mark(held['median'] < 1.0)} |")
    return lines
