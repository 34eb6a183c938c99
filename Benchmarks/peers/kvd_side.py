"""kvd side of the peer benchmarks (runs in the kvd venv with the kvd client importable).

    python kvd_side.py compact  --endpoint E --peer-dir DIR --out FILE [--repeats 10]
    python kvd_side.py datapath --endpoint E --out FILE [--repeats 20] [--tiny 2000]

compact: loads DIR/kvpress_cache.npz + DIR/kvpress.json (written by kvpress_peer.py) and, for each
press and ratio, compacts the same post-RoPE K/V (model smollm2-135m-f32) with the same kvd method,
keeping the same number of tokens per head as the press kept on average. Each repeat uses a fresh
sequence; only the Compact round trip is timed (the reply's elapsed_ns is reported as server time).

datapath: the kvd rows next to LMCache's: Stats round trip p50/p99, and append (inline, zero-copy)
and query (pages + copy out, inline) of 1, 4 and 16 MiB of K+V in GB/s, on llama3-8b-slice (f16:
8 layers x 8 KV heads x 128 dim, so 32 KiB of K+V per token).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from kvd import Client

MIB = 1 << 20


def summary(xs):
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def kvd_params(row: dict, window: int) -> tuple[str, dict, bool]:
    """(kvd method, params, needs queries) keeping what the press kept per head on average.

    kvpress ratio r keeps int(n * (1 - r)) tokens per head (SnapKV/PyramidKV: the observation
    window included; StreamingLLM: n_sink sinks included); kvd's `budget` counts the tokens
    outside the window, `recent` the tokens after the sinks."""
    kept = round(row["kept_tokens_per_head_kvpress"])
    p = row["params"]
    m = row["method"]
    if m == "snapkv":
        return "snapkv", {"budget": kept - window, "kernel": p["kernel_size"], "pooling": "avg"}, True
    if m == "pyramidkv":
        # kvd's pyramid averages to `budget` per head outside the window across layers (beta as
        # kvpress). kvpress itself falls back to one budget for every layer when its pyramid's
        # smallest layer would be under the window (true at 2000 tokens, see README).
        return "pyramidkv", {"budget": kept - window, "beta": p["beta"], "kernel": p["kernel_size"],
                             "pooling": "avg"}, True
    if m == "knorm":
        return "knorm", {"budget": kept}, False
    if m == "streamingllm":
        return "streamingllm", {"sinks": p["n_sink"], "recent": kept - p["n_sink"]}, False
    raise ValueError(f"unknown method {m}")


def run_compact(a) -> dict:
    peer = json.loads((Path(a.peer_dir) / "kvpress.json").read_text())
    data = np.load(Path(a.peer_dir) / "kvpress_cache.npz")
    K = np.ascontiguousarray(data["keys"], dtype=np.float32)
    V = np.ascontiguousarray(data["values"], dtype=np.float32)
    Q = np.ascontiguousarray(data["queries"], dtype=np.float32)
    window = Q.shape[2]
    rows = []
    with Client(a.endpoint, timeout_ms=60000) as c:
        c.hello()

        def once(method, params, queries):
            seq = c.create_sequence(a.model)
            try:
                c.append(seq, K, V, zero_copy=True)     # setup, not timed
                t0 = time.perf_counter()
                r = c.compact(seq, method, queries=queries, **params)
                dt = (time.perf_counter() - t0) * 1e3
                return dt, r.elapsed_ns / 1e6, r
            finally:
                c.release(seq)

        for row in peer["rows"]:
            method, params, needs_q = kvd_params(row, window)
            q = Q if needs_q else None
            once(method, params, q)                      # warm-up (first call of the method)
            rt, srv, last = [], [], None
            for _ in range(a.repeats):
                dt, s, last = once(method, params, q)
                rt.append(dt)
                srv.append(s)
            kept = _kept_per_head(last)
            out = {"method": row["method"], "ratio": row["ratio"], "kvd_method": method,
                   "kvd_params": params, "kvpress_params": row["params"],
                   "kvpress_ms": {k: row["kvpress_ms"][k] for k in ("min", "median", "max")},
                   "kvd_ms": summary(rt), "kvd_server_ms": summary(srv),
                   "kept_tokens_per_head_kvpress": row["kept_tokens_per_head_kvpress"],
                   "kept_kvd": kept}
            rows.append(out)
            print(f"kvd {row['method']:13s} ratio {row['ratio']}: round trip median "
                  f"{out['kvd_ms']['median']:7.2f} ms (server {out['kvd_server_ms']['median']:.2f}); "
                  f"kept/head {kept:.1f} vs kvpress {row['kept_tokens_per_head_kvpress']:.1f}",
                  flush=True)
    return {"model": a.model, "tokens": int(K.shape[2]), "window": window,
            "queries": "inline f32 [layers, q_heads, w, head_dim] in the Compact message",
            "repeats": a.repeats, "rows": rows}


def _kept_per_head(resp) -> float:
    """Mean tokens kept per (layer, head), from the CompactResponse's per-head counts."""
    return float(np.mean([h.kept for h in resp.heads]))


def run_datapath(a) -> dict:
    res = {"model": "llama3-8b-slice", "transport": a.endpoint, "repeats": a.repeats, "rows": []}
    with Client(a.endpoint, timeout_ms=60000) as c:
        hello = c.hello()
        m = c.models["llama3-8b-slice"]
        per_token = 2 * m.layers * m.kv_heads * m.head_dim * 2        # K+V, f16
        for _ in range(200):
            c.stats()
        lat = []
        for _ in range(a.tiny):
            t0 = time.perf_counter()
            c.stats()
            lat.append((time.perf_counter() - t0) * 1e6)
        n = len(lat)
        # p50 of each consecutive fifth, as lmcache_peer.py (placement luck on a 2-vCPU VM)
        fifths = [statistics.median(lat[i * n // 5:(i + 1) * n // 5]) for i in range(5)]
        lat.sort()
        res["stats_us"] = {"p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99) - 1],
                           "n": len(lat), "p50_of_fifths": summary(fifths)}
        print(f"kvd Stats p50 {res['stats_us']['p50']:.1f} us p99 {res['stats_us']['p99']:.1f} us")
        rng = np.random.default_rng(7)
        for mib in (1, 4, 16):
            tokens = mib * MIB // per_token
            shape = (m.layers, m.kv_heads, tokens, m.head_dim)
            k = rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
            v = rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
            nbytes = k.nbytes + v.nbytes

            def append(zero_copy):
                seq = c.create_sequence("llama3-8b-slice")
                try:
                    t0 = time.perf_counter()
                    c.append(seq, k, v, zero_copy=zero_copy)
                    return time.perf_counter() - t0
                finally:
                    c.release(seq)

            seq = c.create_sequence("llama3-8b-slice")
            c.append(seq, k, v, zero_copy=True)
            K, V = c.query(seq).stacked()
            assert (K == k).all() and (V == v).all(), "kvd returned other bytes than appended"

            def query(mode):
                t0 = time.perf_counter()
                if mode == "pages":
                    c.query(seq).stacked()                 # page views, copied out to arrays
                else:
                    c.query(seq, mode="inline")            # bytes travel in the reply
                return time.perf_counter() - t0

            ops = {"append_inline": lambda: append(False), "append_zero_copy": lambda: append(True),
                   "query_pages_copy": lambda: query("pages"), "query_inline": lambda: query("inline")}
            for name, fn in ops.items():
                fn()                                           # warm-up
                gbs = [nbytes / fn() / 1e9 for _ in range(a.repeats)]
                res["rows"].append({"op": name, "mib": mib, "bytes": nbytes,
                                    "gb_per_s": summary(gbs)})
                print(f"kvd {name:17s} {mib:2d} MiB: median {statistics.median(gbs):6.2f} GB/s "
                      f"(min {min(gbs):.2f}, max {max(gbs):.2f})", flush=True)
            c.release(seq)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["compact", "datapath"])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--peer-dir", default=".")
    ap.add_argument("--model", default="smollm2-135m-f32")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--tiny", type=int, default=2000)
    a = ap.parse_args()
    res = run_compact(a) if a.what == "compact" else run_datapath(a)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"kvd_side: wrote {a.out}")


if __name__ == "__main__":
    main()
