"""Section 9: the remote tier's offload and restore throughput against raw Redis in one run
(docs/REMOTE.md). One redis-server on loopback (no persistence) and kvd (release build) on
SmolLM2-135M f16 (30 layers × 3 KV heads × head dim 64, 16-token pages) with remote.enabled.

Offload: `count` idle sequences of `tokens` tokens each (≈ 5.6 MiB of K/V per 256 tokens); the
memory watermarks are then lowered by SIGHUP to 0.05 / 0.02, so the manager evicts them all at once
and ships each as a SequenceBlob; throughput = blob bytes ÷ the time from the SIGHUP until every
blob is in Redis (the eviction pass, the copy out of the pages and the SETs). Restore: every
evicted sequence restored one after the other by one Python client; throughput = K/V bytes ÷ the
total time of the Restore requests (GET, checks, page writes, reply).
Baseline, same server, same run: `redis-benchmark` (hiredis) SET and GET of values of the blob's
size, one connection, no pipelining. Ratio = kvd ÷ raw, goal ≥ 0.8.
"""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from kvd import Client

from .processes import Daemon, free_tcp_port
from .summary import fmt, goal_mark, spread

MODEL = "smollm2-135m"
LAYERS, KV_HEADS, HEAD_DIM, PAGE_TOKENS = 30, 3, 64, 16
HEADS = LAYERS * KV_HEADS


class Redis:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="kvd-redis-"))
        self.port = free_tcp_port()

    def __enter__(self):
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.cli("PING") == "PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True).stdout.strip()

    def raw(self, value_bytes: int, n: int) -> dict:
        """redis-benchmark SET and GET of `value_bytes` values: MiB/s each."""
        out = subprocess.run(["redis-benchmark", "-p", str(self.port), "-t", "set,get", "-d", str(value_bytes), "-n", str(n),
                              "-c", "1", "--csv", "-q"], capture_output=True, text=True, check=True).stdout
        rps = {m.group(1): float(m.group(2)) for m in re.finditer(r'^"(SET|GET)","([0-9.]+)"', out, re.M)}
        return {op.lower(): rps[op] * value_bytes / 2**20 for op in ("SET", "GET")}

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait(10)


class RemoteDaemon(Daemon):
    def __init__(self, redis_port: int, arena_mib: int):
        super().__init__("remote")
        self.settings = {
            "server": {"endpoints": [self.endpoints.ipc], "max_message_bytes": "64MiB", "max_sequences": 4096},
            "arena": {"shm_name": self.shm, "size_bytes": f"{arena_mib}MiB", "staging_bytes": "8MiB"},
            "models": [{"name": MODEL, "layers": LAYERS, "kv_heads": KV_HEADS, "q_heads": 9, "head_dim": HEAD_DIM,
                        "dtype": "f16", "page_tokens": PAGE_TOKENS, "default_method": "streamingllm"}],
            "memory": {"high": 0.95, "low": 0.9, "compress_policy": "", "evict": True, "busy_ms": 50, "interval_ms": 10,
                       "lease_seconds": 0},
            "remote": {"enabled": True, "nodes": [f"127.0.0.1:{redis_port}"], "key_prefix": "bench:",
                       "command_timeout_ms": 10000, "queue_bytes": "1GiB"},
            "log": {"level": "warning"},
        }
        self.write()

    def write(self):
        self.config.write_text(json.dumps(self.settings, indent=1))


def measure(count: int, tokens: int) -> dict:
    import numpy as np
    kv_bytes = HEADS * tokens * HEAD_DIM * 2 * 2
    arena_mib = int(count * HEADS * -(-tokens // PAGE_TOKENS) * 4096 / 0.85 / 2**20) + 16
    with Redis() as redis, RemoteDaemon(redis.port, arena_mib) as d, Client(d.endpoints.ipc, timeout_ms=60000) as c:
        rng = np.random.default_rng(1)
        k = rng.standard_normal((LAYERS, KV_HEADS, tokens, HEAD_DIM)).astype(np.float16)
        seqs = []
        for _ in range(count):
            s = c.create_sequence(MODEL)
            c.append(s, k, k)
            seqs.append(s)
        time.sleep(0.2)  # past busy_ms: every sequence is idle
        d.settings["memory"].update(high=0.05, low=0.02)
        d.write()
        t0 = time.perf_counter()
        d.proc.send_signal(signal.SIGHUP)
        while True:
            r = c.stats().remote
            if r.offloaded + r.offload_failures + r.offload_dropped >= count and r.queued == 0:
                break
            time.sleep(0.001)
        offload_s = time.perf_counter() - t0
        blob_bytes = r.offloaded_bytes / max(r.offloaded, 1)
        restore_s = 0.0
        restored = 0
        for s in seqs:
            t = time.perf_counter()
            c.restore(s)
            restore_s += time.perf_counter() - t
            restored += 1
            c.release(s)  # keep the arena empty for the next restore
        raw = redis.raw(int(blob_bytes), max(count, 10))
        kvd_offload = r.offloaded_bytes / offload_s / 2**20
        kvd_restore = restored * kv_bytes / restore_s / 2**20
        return {"count": count, "tokens": tokens, "blob_bytes": blob_bytes, "offloaded": r.offloaded,
                "failures": r.offload_failures + r.offload_dropped, "offload_mib_s": kvd_offload,
                "restore_mib_s": kvd_restore, "raw_set_mib_s": raw["set"], "raw_get_mib_s": raw["get"],
                "offload_ratio": kvd_offload / raw["set"], "restore_ratio": kvd_restore / raw["get"]}


def table(runs: list) -> list:
    rows = [r for run in runs for r in run]
    first = rows[0]
    off = spread([r["offload_ratio"] for r in rows])
    res = spread([r["restore_ratio"] for r in rows])
    return [f"### 9. Remote tier (SmolLM2-135M f16, {first['count']} sequences of {first['tokens']} tokens, "
            f"blobs of {first['blob_bytes'] / 2**20:.1f} MiB; one redis-server on loopback; ratio = kvd ÷ redis-benchmark "
            "(hiredis) SET / GET of values of the blob's size, same server, same run)", "",
            "| path | kvd MiB/s | raw Redis MiB/s | ratio | goal ≥ 0.8× |", "|---|---:|---:|---:|---|",
            f"| offload (evict → SET) | {fmt(spread([r['offload_mib_s'] for r in rows]), 0)} | "
            f"{fmt(spread([r['raw_set_mib_s'] for r in rows]), 0)} | {fmt(off)}× | {goal_mark(off['median'] >= 0.8)} |",
            f"| restore (GET → pages) | {fmt(spread([r['restore_mib_s'] for r in rows]), 0)} | "
            f"{fmt(spread([r['raw_get_mib_s'] for r in rows]), 0)} | {fmt(res)}× | {goal_mark(res['median'] >= 0.8)} |"]
