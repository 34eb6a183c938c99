"""Section 9: the remote tier's offload and restore throughput against raw Redis in one run
(docs/REMOTE.md). One redis-server on loopback (no persistence) and kvd (release build) on
SmolLM2-135M f16 (30 layers × 3 KV heads × head dim 64, 16-token pages) with remote.enabled.

Each round: `count` idle sequences of `tokens` tokens each (≈ 5.6 MiB of K/V per 256 tokens); the
memory watermarks are then lowered by SIGHUP to 0.05 / 0.02, so the manager evicts them all in one
pass and ships each as a SequenceBlob. Offload throughput = blob bytes ÷ the time from the first
blob queued until every blob is in Redis (the copies out of the pages, the checksums and the SETs;
the reload and the wait for the manager's next pass before it are recorded apart as `react_ms`).
Restore: every evicted sequence restored one after the other by one Python client; throughput =
K/V bytes ÷ the total time of the Restore requests (GET, checks, page writes, reply). The first
round is a daemon's first burst (new heap, new Redis memory); then WARM_ROUNDS rounds of a daemon
that has been running are the headline.
Baseline, same server, same run: `redis-benchmark` (hiredis) SET and GET of values of the blob's
size, one connection, no pipelining, run before the first headline round and after each one; each
round is compared with the mean of the baseline runs on either side of it. Ratio = kvd ÷ raw, goal
≥ 0.8.
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
WARM_ROUNDS = 4  # headline rounds per run, each between two raw baseline runs


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


def cycle(c: Client, d: RemoteDaemon, k, count: int) -> dict:
    """One offload-then-restore round of `count` fresh sequences: seconds and bytes of each half."""
    before = c.stats().remote
    seqs = []
    for _ in range(count):
        s = c.create_sequence(MODEL)
        c.append(s, k, k)
        seqs.append(s)
    time.sleep(0.2)  # past busy_ms: every sequence is idle
    d.settings["memory"].update(high=0.05, low=0.02)
    d.write()
    signalled = time.perf_counter()
    d.proc.send_signal(signal.SIGHUP)
    # The clock starts when the first blob is queued: the reload and the manager's next pass (up to
    # interval_ms) are not the tier's work. `react_s` records that part.
    started = None
    while True:
        r = c.stats().remote
        done = (r.offloaded + r.offload_failures + r.offload_dropped) - (before.offloaded + before.offload_failures + before.offload_dropped)
        if started is None and (done > 0 or r.queued > 0):
            started = time.perf_counter()
        if done >= count and r.queued == 0:
            break
        time.sleep(0.0005)
    offload_s = time.perf_counter() - started
    react_s = started - signalled
    # Restores run once the pressure is over (as a runtime would bring a sequence back), so the
    # manager is not evicting while they are timed.
    d.settings["memory"].update(high=0.95, low=0.9)
    d.write()
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.1)
    restore_s = 0.0
    for s in seqs:
        t = time.perf_counter()
        c.restore(s)
        restore_s += time.perf_counter() - t
        c.release(s)  # keep the arena empty for the next restore
    return {"offloaded": r.offloaded - before.offloaded, "failures": done - (r.offloaded - before.offloaded),
            "offloaded_bytes": r.offloaded_bytes - before.offloaded_bytes, "offload_s": offload_s, "react_s": react_s,
            "restore_s": restore_s}


def measure(count: int, tokens: int) -> dict:
    import numpy as np
    kv_bytes = HEADS * tokens * HEAD_DIM * 2 * 2
    arena_mib = int(count * HEADS * -(-tokens // PAGE_TOKENS) * 4096 / 0.85 / 2**20) + 16
    with Redis() as redis, RemoteDaemon(redis.port, arena_mib) as d, Client(d.endpoints.ipc, timeout_ms=60000) as c:
        rng = np.random.default_rng(1)
        k = rng.standard_normal((LAYERS, KV_HEADS, tokens, HEAD_DIM)).astype(np.float16)
        # The first round is a daemon's first burst: its heap, Redis' memory and the connection are
        # new, and page faults are a large part of it. The second is a daemon that has been running.
        first = cycle(c, d, k, count)
        blob_bytes = first["offloaded_bytes"] / max(first["offloaded"], 1)
        n = max(count, 10)
        # Raw and kvd rounds alternate, and each kvd round is compared with the mean of the raw runs
        # right before and after it: a shared machine's load drifts, and pairs close in time see
        # about the same load.
        raws = [redis.raw(int(blob_bytes), n)]
        pairs = []
        for _ in range(WARM_ROUNDS):
            warm = cycle(c, d, k, count)
            raws.append(redis.raw(int(blob_bytes), n))
            raw = {op: (raws[-2][op] + raws[-1][op]) / 2 for op in raws[-1]}
            off = warm["offloaded_bytes"] / warm["offload_s"] / 2**20
            res = count * kv_bytes / warm["restore_s"] / 2**20
            pairs.append({"offload_mib_s": off, "restore_mib_s": res, "raw_set_mib_s": raw["set"], "raw_get_mib_s": raw["get"],
                          "offload_ratio": off / raw["set"], "restore_ratio": res / raw["get"], "react_ms": warm["react_s"] * 1e3,
                          "failures": warm["failures"]})
        first_off = first["offloaded_bytes"] / first["offload_s"] / 2**20
        first_res = count * kv_bytes / first["restore_s"] / 2**20
        return [{"count": count, "tokens": tokens, "blob_bytes": blob_bytes, **p,
                 "first_offload_mib_s": first_off, "first_restore_mib_s": first_res,
                 "first_offload_ratio": first_off / raws[0]["set"], "first_restore_ratio": first_res / raws[0]["get"]}
                for p in pairs]


def table(runs: list) -> list:
    rows = [r for run in runs for pairs in run for r in pairs]
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
            f"{fmt(spread([r['raw_get_mib_s'] for r in rows]), 0)} | {fmt(res)}× | {goal_mark(res['median'] >= 0.8)} |",
            f"| first burst after start: offload | {fmt(spread([r['first_offload_mib_s'] for r in rows]), 0)} | "
            f"{fmt(spread([r['raw_set_mib_s'] for r in rows]), 0)} | {fmt(spread([r['first_offload_ratio'] for r in rows]))}× | |",
            f"| first burst after start: restore | {fmt(spread([r['first_restore_mib_s'] for r in rows]), 0)} | "
            f"{fmt(spread([r['raw_get_mib_s'] for r in rows]), 0)} | {fmt(spread([r['first_restore_ratio'] for r in rows]))}× | |"]
