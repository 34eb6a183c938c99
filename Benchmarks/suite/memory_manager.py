"""Section 6: the memory manager under load (Sources/KVDServer/Memory). kvd runs on Config/kvd.yaml's
arena (256 MiB, 32 MiB of it staging) holding only SmolLM2-135M f16, so pages are 4 KiB as in
kvd.yaml (bench.yaml's other models would make them 8 KiB), with high 0.9 / low 0.8, kvd.yaml's
StreamingLLM `pressure` policy (4 sinks + 256 recent) and busy_ms 200.

Throughput: one Python client appends the same load, fresh sequences of SEQ_TOKENS tokens in
Appends of `chunk` tokens (inline) up to LOAD of the pages, once on an empty arena (the baseline:
it stays under high, the manager never acts) and once on an arena filled to FILL with idle
sequences, past busy_ms, so that the load only fits if the manager compresses (then evicts) idle
sequences while it runs. The two alternate `repeats` times per run; ratio = under reclaim ÷ empty,
the median over the repeats of each pair's ratio (MiB/s: the median phase).

High to low: fill to half an Append under high, wait past busy_ms, cross high with one Append, then
read the daemon's own figure (MemoryStats.last_reclaim_us: from the manager first seeing usage above
high to below low) and the client's wall time from sending that Append to the first Stats showing
usage at or under low.
"""
import json
import statistics
import time

import numpy as np

from kvd import Client, KvdError

from .processes import Daemon
from .summary import fmt, goal_mark, percentile, spread

MODEL = "smollm2-135m"
LAYERS, KV_HEADS, HEAD_DIM, PAGE_TOKENS = 30, 3, 64, 16
HEADS = LAYERS * KV_HEADS
TOKEN_BYTES = 2 * HEADS * HEAD_DIM * 2          # K and V, f16: 22.5 KiB per token
HIGH, LOW, BUSY_MS, INTERVAL_MS = 0.9, 0.8, 200, 100
RECENT = 256
# Past busy_ms, plus a manager tick, so every filled sequence is idle when the load starts.
SETTLE_S = (BUSY_MS + INTERVAL_MS) / 1000 + 0.05
SEQ_TOKENS = 1024   # idle and load sequences alike: a chat turn's context; pressure keeps 260 of it
FILL = 0.88         # idle sequences up to just under high
LOAD = 0.75         # the load's share of the pages: fits an empty arena without crossing high


def config(d: Daemon, arena_mib: int, staging_mib: int) -> dict:
    """The daemon's whole config (JSON is YAML), on the private endpoint and shm name Daemon chose."""
    return {
        "server": {"endpoints": [d.endpoints.ipc], "max_message_bytes": "64MiB", "max_sequences": 4096},
        "arena": {"shm_name": d.shm, "size_bytes": f"{arena_mib}MiB", "staging_bytes": f"{staging_mib}MiB"},
        "models": [{"name": MODEL, "layers": LAYERS, "kv_heads": KV_HEADS, "q_heads": 9, "head_dim": HEAD_DIM,
                    "dtype": "f16", "page_tokens": PAGE_TOKENS, "default_method": "streamingllm"}],
        "policies": {"pressure": {"method": "streamingllm", "params": {"sinks": 4, "recent": RECENT}}},
        # The rest of kvd.yaml's memory defaults (leases 30 s, floor 64, reclaim_wait 500 ms).
        "memory": {"high": HIGH, "low": LOW, "compress_policy": "pressure", "fallback_policy": "pressure",
                   "busy_ms": BUSY_MS, "interval_ms": INTERVAL_MS, "evict": True, "reclaim_wait_ms": 500,
                   "events_endpoint": ""},
        "log": {"level": "warning"},
    }


class ManagedDaemon(Daemon):
    def __init__(self, arena_mib: int, staging_mib: int):
        super().__init__("manager")
        self.config.write_text(json.dumps(config(self, arena_mib, staging_mib), indent=1))


def pages_of(tokens: int) -> int:
    return HEADS * -(-tokens // PAGE_TOKENS)


class Session:
    """One client, the K/V it appends (one Append's worth, reused: StreamingLLM is positional, so
    the values do not change what the manager does) and every sequence it made."""

    def __init__(self, client: Client, chunk: int):
        rng = np.random.default_rng(chunk)
        shape = (LAYERS, KV_HEADS, chunk, HEAD_DIM)
        self.c, self.chunk = client, chunk
        self.k = rng.standard_normal(shape).astype(np.float16)
        self.v = rng.standard_normal(shape).astype(np.float16)
        self.seqs = []

    def used(self) -> int:
        s = self.c.stats()
        return s.total_pages - s.free_pages

    def sequence(self, tokens: int, latencies=None, failures=None) -> None:
        seq = self.c.create_sequence(MODEL)
        self.seqs.append(seq)
        for start in range(0, tokens, self.chunk):
            n = min(self.chunk, tokens - start)
            k, v = (self.k, self.v) if n == self.chunk else (self.k[:, :, :n], self.v[:, :, :n])
            t = time.perf_counter()
            try:
                self.c.append(seq, k, v)
            except KvdError as e:
                if failures is None:
                    raise
                failures.append(f"{e.code.name}: {e.message}")
                return  # that sequence is broken off; the load goes on with the next one
            if latencies is not None:
                latencies.append(time.perf_counter() - t)

    def fill_idle(self, target_pages: int) -> None:
        """Idle sequences of SEQ_TOKENS, then one shorter one, up to target_pages (± one page per head)."""
        used = self.used()
        while used + pages_of(SEQ_TOKENS) <= target_pages:
            self.sequence(SEQ_TOKENS)
            used += pages_of(SEQ_TOKENS)
        rest = (target_pages - used) // HEADS * PAGE_TOKENS
        if rest > 0:
            self.sequence(rest)

    def release_all(self) -> None:
        for seq in self.seqs:
            try:
                self.c.release(seq)
            except KvdError:
                pass  # evicted by the manager: its id answers EVICTED
        self.seqs = []


def load(s: Session, total_pages: int) -> dict:
    """The timed load: fresh sequences of SEQ_TOKENS until total_pages; counts what the manager did."""
    sequences = max(1, total_pages // pages_of(SEQ_TOKENS))
    latencies, failures = [], []
    before = s.c.stats().memory
    t = time.perf_counter()
    for _ in range(sequences):
        s.sequence(SEQ_TOKENS, latencies, failures)
    seconds = time.perf_counter() - t
    after = s.c.stats().memory
    # Bytes of the Appends that succeeded (every one carries a whole chunk: SEQ_TOKENS is a multiple).
    return {"seconds": seconds, "bytes": len(latencies) * s.chunk * TOKEN_BYTES, "appends": len(latencies) + len(failures),
            "latencies": latencies, "failures": failures,
            **{k: getattr(after, k) - getattr(before, k) for k in
               ("synchronous_reclaims", "reclaim_passes", "compactions", "evictions", "compactions_pages", "evictions_pages")}}


def throughput(s: Session, limit: int, repeats: int) -> dict:
    phases = {"empty": [], "reclaim": []}
    for _ in range(repeats):
        time.sleep(SETTLE_S)  # the same pause before both phases, so neither starts off a busier machine
        phases["empty"].append(load(s, int(LOAD * limit)))
        s.release_all()
        s.fill_idle(int(FILL * limit))
        time.sleep(SETTLE_S)
        phases["reclaim"].append(load(s, int(LOAD * limit)))
        s.release_all()
    # Each repeat pairs an empty and a reclaim phase run back to back; the median over repeats of
    # their ratio shrugs off a repeat that other work on the machine slowed.
    rate = lambda r: r["bytes"] / r["seconds"] / 2**20
    ratios = [rate(b) / rate(a) for a, b in zip(phases["empty"], phases["reclaim"])]
    row = {"kind": "throughput", "chunk": s.chunk, "append_bytes": s.chunk * TOKEN_BYTES, "repeats": repeats,
           "ratios": ratios, "ratio": statistics.median(ratios)}
    for name, runs in phases.items():
        lat = [x for r in runs for x in r["latencies"]]
        row[name] = {"mib_per_s": statistics.median(rate(r) for r in runs), "rates": [rate(r) for r in runs],
                     "appends": sum(r["appends"] for r in runs), "failures": [f for r in runs for f in r["failures"]],
                     "p50_ms": percentile(lat, 0.5) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
                     "max_ms": max(lat) * 1e3,
                     **{k: sum(r[k] for r in runs) for k in ("synchronous_reclaims", "reclaim_passes", "compactions",
                                                             "evictions", "compactions_pages", "evictions_pages")}}
    return row


def high_to_low(s: Session, limit: int, timeout_s: float = 5.0) -> dict:
    """One crossing of high by one Append of s.chunk tokens, and the way back under low."""
    s.fill_idle(int(HIGH * limit) - pages_of(s.chunk) // 2)
    time.sleep(SETTLE_S)
    before = s.c.stats()
    used_before = before.total_pages - before.free_pages
    seq = s.c.create_sequence(MODEL)
    s.seqs.append(seq)
    t0 = time.perf_counter()
    s.c.append(seq, s.k, s.v)
    append_s = time.perf_counter() - t0
    seen_low = None
    while time.perf_counter() - t0 < timeout_s:
        st = s.c.stats()
        if st.total_pages - st.free_pages <= LOW * limit:
            seen_low = time.perf_counter() - t0
            break
        time.sleep(0.001)
    # The daemon records last_reclaim_us when its pass ends, a moment after usage is under low.
    m = s.c.stats().memory
    deadline = time.perf_counter() + 2.0
    while m.last_reclaim_us == before.memory.last_reclaim_us and time.perf_counter() < deadline:
        time.sleep(0.005)
        m = s.c.stats().memory
    s.release_all()
    return {"used_before": used_before, "crossing_pages": pages_of(s.chunk),
            "crossed": used_before + pages_of(s.chunk) > HIGH * limit, "append_ms": append_s * 1e3,
            "client_ms": None if seen_low is None else seen_low * 1e3,
            "daemon_ms": m.last_reclaim_us / 1e3 if m.last_reclaim_us != before.memory.last_reclaim_us else None,
            "reached_low": m.last_reclaim_reached_low,
            "compactions": m.compactions - before.memory.compactions, "evictions": m.evictions - before.memory.evictions}


def measure(arena_mib: int, staging_mib: int, chunks, repeats: int) -> list:
    """One run of the section: a throughput row per Append size, then a high-to-low row."""
    rows = []
    with ManagedDaemon(arena_mib, staging_mib) as d, Client(d.endpoints.ipc, timeout_ms=30000) as c:
        c.hello()
        limit = c.stats().total_pages
        # Warm-up, untimed: the first touch of each arena page in this mapping faults, and the
        # empty-arena phase would pay for it while the reclaim phase reuses faulted pages.
        warm = Session(c, max(chunks))
        warm.fill_idle(int(FILL * limit))
        warm.release_all()
        for chunk in chunks:
            rows.append(dict(throughput(Session(c, chunk), limit, repeats), arena_mib=arena_mib, pages=limit))
        crossings = [high_to_low(Session(c, max(chunks)), limit) for _ in range(min(repeats, 5))]
        done = [x for x in crossings if x["crossed"] and x["client_ms"] is not None and x["daemon_ms"] is not None]
        mid = sorted(done, key=lambda x: x["client_ms"])[len(done) // 2] if done else crossings[0]
        rows.append({"kind": "high_to_low", "arena_mib": arena_mib, "pages": limit, "chunk": max(chunks),
                     "crossings": crossings, "failed_crossings": len(crossings) - len(done),
                     "client_ms": percentile([x["client_ms"] for x in done], 0.5) if done else None,
                     "daemon_ms": percentile([x["daemon_ms"] for x in done], 0.5) if done else None,
                     "append_ms": percentile([x["append_ms"] for x in done], 0.5) if done else None,
                     "reached_low": all(x["reached_low"] for x in crossings), "median_crossing": mid})
    return rows


def table(runs: list) -> list:
    first = runs[0][0]
    lines = [f"### 6. Memory manager (SmolLM2-135M f16 on a {first['arena_mib']} MiB arena, {first['pages']} pages of "
             f"4 KiB; high {HIGH} / low {LOW}, StreamingLLM pressure policy 4 sinks + {RECENT} recent, busy_ms {BUSY_MS}; "
             f"one Python client, inline Append over ipc, sequences of {SEQ_TOKENS} tokens up to {LOAD:.0%} of the pages; "
             f"ratio = on an arena {FILL:.0%} full of idle sequences ÷ the same load on an empty arena, same run)", "",
             "| tokens per Append | MiB per Append | empty MiB/s | under reclaim MiB/s | ratio | append p99 ms empty / reclaim "
             "| slowest append ms | synchronous reclaims | compactions | evictions | failed appends | goal ≥ 0.8×, 0 failed |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    tput = {}
    for rows in runs:
        for r in rows:
            if r["kind"] == "throughput":
                tput.setdefault(r["chunk"], []).append(r)
    for chunk, rs in sorted(tput.items()):
        ratio = spread([r["ratio"] for r in rs])
        failed = sum(len(r["reclaim"]["failures"]) + len(r["empty"]["failures"]) for r in rs)
        count = lambda k: fmt(spread([r["reclaim"][k] for r in rs]), 0)
        lines.append(
            f"| {chunk} | {rs[0]['append_bytes'] / 2**20:.2f} | {fmt(spread([r['empty']['mib_per_s'] for r in rs]), 0)} | "
            f"{fmt(spread([r['reclaim']['mib_per_s'] for r in rs]), 0)} | {fmt(ratio)}× | "
            f"{fmt(spread([r['empty']['p99_ms'] for r in rs]), 1)} / {fmt(spread([r['reclaim']['p99_ms'] for r in rs]), 1)} | "
            f"{fmt(spread([r['reclaim']['max_ms'] for r in rs]), 1)} | {count('synchronous_reclaims')} | "
            f"{count('compactions')} | {count('evictions')} | {failed} | "
            f"{goal_mark(ratio['median'] >= 0.8 and failed == 0)} |")
    lines += ["", "| arena MiB | pages | Append over high (tokens) | daemon: last_reclaim_us, ms | client: that Append's send "
              "→ Stats ≤ low, ms | of which that Append, ms | compactions | evictions | reached low | goal well under 1 s |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    return lines + high_to_low_row([r for run in runs for r in run if r["kind"] == "high_to_low"])


def high_to_low_row(rows: list) -> list:
    if not rows:
        return []
    done = [r for r in rows if r["client_ms"] is not None and r["daemon_ms"] is not None]
    ok = len(done) == len(rows) and all(r["reached_low"] and r["failed_crossings"] == 0 for r in rows)
    head = f"| {rows[0]['arena_mib']} | {rows[0]['pages']} | {rows[0]['chunk']} | "
    if not done:
        return [head + "— | — | — | | | **no** | **no** |"]
    client = spread([r["client_ms"] for r in done])
    return [head + f"{fmt(spread([r['daemon_ms'] for r in done]), 1)} | {fmt(client, 1)} | "
            f"{fmt(spread([r['append_ms'] for r in done]), 1)} | {fmt(spread([r['median_crossing']['compactions'] for r in done]), 0)} | "
            f"{fmt(spread([r['median_crossing']['evictions'] for r in done]), 0)} | {goal_mark(ok)} | "
            f"< 1 s: {goal_mark(ok and client['max'] < 1000)} |"]
