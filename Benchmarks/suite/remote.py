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

Baseline (the issue's): raw hiredis GET and SET of the same bytes against the same server, in the
same round. Between kvd's offload and its restores, `Benchmarks/redis/raw_setget.c` GETs every
blob kvd just wrote, one command at a time on one connection, then SETs each under a key of its
own: the same values, the same server state, seconds apart. Ratio = kvd ÷ raw, goal ≥ 0.8.
A second, stricter reference: `redis-benchmark` SET and GET of values of the blob's size, one
connection, no pipelining. It writes one preformatted command and reads one hot key over and over,
so it is faster than a program using hiredis; its runs sit before the first headline round and
after each one, and each round is compared with the mean of the two around it.
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

from .processes import ROOT, Daemon, free_tcp_port
from .summary import fmt, goal_mark, spread

MODEL = "smollm2-135m"
LAYERS, KV_HEADS, HEAD_DIM, PAGE_TOKENS = 30, 3, 64, 16
HEADS = LAYERS * KV_HEADS
WARM_ROUNDS = 4  # headline rounds per run, each between two redis-benchmark runs
RAW_SETGET = ROOT / "Benchmarks" / "redis" / "build" / "raw-setget"


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

    def raw_same_bytes(self, pattern: str) -> dict:
        """raw-setget: hiredis GET of every key matching `pattern`, then SET of the same values
        under other keys (removed after): MiB/s each, and how many keys and bytes it moved."""
        out = subprocess.run([str(RAW_SETGET), str(self.port), pattern], capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        return {"keys": r["keys"], "bytes": r["bytes"], "get": r["bytes"] / r["get_s"] / 2**20,
                "set": r["bytes"] / r["set_s"] / 2**20}

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


def cycle(c: Client, d: RemoteDaemon, redis: Redis, k, count: int) -> dict:
    """One offload-then-restore round of `count` fresh sequences: seconds and bytes of each half,
    and the raw hiredis GET/SET of the blobs in between (`raw`)."""
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
    raw = redis.raw_same_bytes(f"{d.settings['remote']['key_prefix']}*:seq:*")
    assert raw["keys"] == count, f"raw-setget found {raw['keys']} blobs, expected {count}"
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
            "restore_s": restore_s, "raw": raw}


def measure(count: int, tokens: int) -> dict:
    import numpy as np
    kv_bytes = HEADS * tokens * HEAD_DIM * 2 * 2
    arena_mib = int(count * HEADS * -(-tokens // PAGE_TOKENS) * 4096 / 0.85 / 2**20) + 16
    subprocess.run(["make", "-s", "-C", str(RAW_SETGET.parent.parent)], check=True, stdout=subprocess.DEVNULL)
    with Redis() as redis, RemoteDaemon(redis.port, arena_mib) as d, Client(d.endpoints.ipc, timeout_ms=60000) as c:
        rng = np.random.default_rng(1)
        k = rng.standard_normal((LAYERS, KV_HEADS, tokens, HEAD_DIM)).astype(np.float16)
        # The first round is a daemon's first burst: its heap, Redis' memory and the connection are
        # new, and page faults are a large part of it. The second is a daemon that has been running.
        first = cycle(c, d, redis, k, count)
        blob_bytes = first["offloaded_bytes"] / max(first["offloaded"], 1)
        n = max(count, 10)
        # Raw and kvd rounds alternate, and each kvd round is compared with the mean of the raw runs
        # right before and after it: a shared machine's load drifts, and pairs close in time see
        # about the same load.
        raws = [redis.raw(int(blob_bytes), n)]
        pairs = []
        for _ in range(WARM_ROUNDS):
            warm = cycle(c, d, redis, k, count)
            raws.append(redis.raw(int(blob_bytes), n))
            bench = {op: (raws[-2][op] + raws[-1][op]) / 2 for op in raws[-1]}
            off = warm["offloaded_bytes"] / warm["offload_s"] / 2**20
            res = count * kv_bytes / warm["restore_s"] / 2**20
            raw = warm["raw"]
            pairs.append({"offload_mib_s": off, "restore_mib_s": res, "raw_set_mib_s": raw["set"], "raw_get_mib_s": raw["get"],
                          "offload_ratio": off / raw["set"], "restore_ratio": res / raw["get"],
                          "bench_set_mib_s": bench["set"], "bench_get_mib_s": bench["get"],
                          "bench_offload_ratio": off / bench["set"], "bench_restore_ratio": res / bench["get"],
                          "react_ms": warm["react_s"] * 1e3, "failures": warm["failures"]})
        first_off = first["offloaded_bytes"] / first["offload_s"] / 2**20
        first_res = count * kv_bytes / first["restore_s"] / 2**20
        return [{"count": count, "tokens": tokens, "blob_bytes": blob_bytes, **p,
                 "first_offload_mib_s": first_off, "first_restore_mib_s": first_res,
                 "first_raw_set_mib_s": first["raw"]["set"], "first_raw_get_mib_s": first["raw"]["get"],
                 "first_offload_ratio": first_off / first["raw"]["set"], "first_restore_ratio": first_res / first["raw"]["get"]}
                for p in pairs]


def table(runs: list) -> list:
    rows = [r for run in runs for pairs in run for r in pairs]
    first = rows[0]
    col = lambda key, digits=0: fmt(spread([r[key] for r in rows]), digits)
    off = spread([r["offload_ratio"] for r in rows])
    res = spread([r["restore_ratio"] for r in rows])
    return [f"### 9. Remote tier (SmolLM2-135M f16, {first['count']} sequences of {first['tokens']} tokens, "
            f"blobs of {first['blob_bytes'] / 2**20:.1f} MiB; one redis-server on loopback; raw = hiredis GET / SET of "
            "the same blobs, one command at a time, same server, same round; redis-benchmark = one preformatted "
            "command on one hot key, the stricter reference)", "",
            "| path | kvd MiB/s | raw hiredis MiB/s | ratio | goal ≥ 0.8× | redis-benchmark MiB/s | ratio to it |",
            "|---|---:|---:|---:|---|---:|---:|",
            f"| offload (evict → SET) | {col('offload_mib_s')} | {col('raw_set_mib_s')} | {fmt(off)}× | "
            f"{goal_mark(off['median'] >= 0.8)} | {col('bench_set_mib_s')} | {col('bench_offload_ratio', 2)}× |",
            f"| restore (GET → pages) | {col('restore_mib_s')} | {col('raw_get_mib_s')} | {fmt(res)}× | "
            f"{goal_mark(res['median'] >= 0.8)} | {col('bench_get_mib_s')} | {col('bench_restore_ratio', 2)}× |",
            f"| first burst after start: offload | {col('first_offload_mib_s')} | {col('first_raw_set_mib_s')} | "
            f"{col('first_offload_ratio', 2)}× | | | |",
            f"| first burst after start: restore | {col('first_restore_mib_s')} | {col('first_raw_get_mib_s')} | "
            f"{col('first_restore_ratio', 2)}× | | | |"]
