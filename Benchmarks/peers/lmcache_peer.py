"""LMCache side of the request / data-path side-by-side (runs in the lmcache venv, see setup.sh).

    python lmcache_peer.py --port P --out FILE [--start] [--tiny 2000] [--repeats 10]

Talks to LMCache's multiprocess server (`lmcache server`, zmq transport on tcp://127.0.0.1:P) with
LMCache's own clients, nothing hand-rolled:
- tiny request: `get_chunk_size()` of the request client that
  `lmcache.v1.multiprocess.transport.factory.RequestClientFactory` builds (the same call a vLLM worker
  makes at start), p50/p99 over `--tiny` round trips; `noop()` is reported too.
- store / retrieve of 1, 4 and 16 MiB: `ServerBenchClient`, the client behind `lmcache bench server`,
  in cpu mode with transfer mode `lmcache_driven` (the server's default): the worker's paged KV
  tensors live in POSIX shared memory registered with REGISTER_KV_CACHE, and STORE / RETRIEVE make
  the server copy the named blocks between those tensors and its L1 memory. That is LMCache's
  zero-copy CPU path, the counterpart of kvd's Reserve/Commit append and page query.
  KV layout (the CPU tensors its client accepts): one layer, vLLM NHD paged blocks
  (2, blocks, 16 tokens, 8 heads, 128 dim) float16 = 4 KiB of K+V per token, so 1 MiB is 256 tokens
  = one LMCache chunk (chunk size 256), 4 MiB 4 chunks, 16 MiB 16 chunks.
Each repeat stores a new token sequence (new keys, so nothing is deduplicated), then looks it up
(untimed, as a vLLM worker does before RETRIEVE; repeated until the chunks are visible, which
takes a few ms after STORE's reply) and retrieves it into zeroed blocks. Once per size
the retrieved blocks are compared with what was stored.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LMCACHE_DISABLE_BANNER", "1")
# LMCache reports usage to its own web service unless told not to (inherited by --start's server).
os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

MIB = 1 << 20
TOKEN_BYTES = 2 * 8 * 128 * 2           # K+V, 8 heads x 128 dim, float16, one layer
SHAPE_SPEC = "(2,{nb},16,8,128):float16:1"
NUM_BLOCKS = 1024                       # 16k tokens of room: the largest request uses 256 blocks


def server_cmd(port: int) -> list[str]:
    # --eviction-policy is required with --l1-size-gb in 0.5.6 ("Legacy L1 configuration requires
    # --l1-size-gb and --eviction-policy"); the HTTP / Prometheus ports are moved next to P so two
    # runs on one machine do not collide on 8080 / 9090.
    return [str(Path(sys.executable).with_name("lmcache")), "server", "--host", "127.0.0.1",
            "--port", str(port), "--l1-size-gb", "2", "--eviction-policy", "LRU",
            "--http-host", "127.0.0.1", "--http-port", str(port + 1),
            "--prometheus-port", str(port + 2)]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def summary(xs):
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def tiny_requests(url: str, n: int) -> dict:
    import zmq
    from lmcache.v1.multiprocess.transport.factory import RequestClientFactory
    ctx = zmq.Context()
    client = RequestClientFactory.create(url, context=ctx)
    try:
        # The first call also waits for the server to come up (the DEALER queues the request).
        chunk = client.get_chunk_size().result(timeout=120)
        out = {"chunk_size": chunk}
        for name, call in (("get_chunk_size", client.get_chunk_size), ("noop", client.noop)):
            for _ in range(200):
                call().result(timeout=10)
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                call().result(timeout=10)
                lat.append((time.perf_counter() - t0) * 1e6)
            # p50 of each fifth too: on a 2-vCPU VM whole stretches run ~3x slower depending on
            # which cores the scheduler puts client and server (a raw ZeroMQ echo does it too).
            blocks = [pct(lat[i * n // 5:(i + 1) * n // 5], 0.5) for i in range(5)]
            out[name + "_us"] = {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": n,
                                 "p50_of_fifths": summary(blocks)}
            print(f"lmcache {name:15s} p50 {out[name + '_us']['p50']:7.1f} us "
                  f"p99 {out[name + '_us']['p99']:7.1f} us", flush=True)
        return out
    finally:
        client.close()
        ctx.term()


def wait_visible(client, seq: int, mib: int):
    """LOOKUP until the stored chunks are visible; returns the request to RETRIEVE with.

    STORE's reply means the server has finished reading the worker's blocks; the chunks become
    visible to LOOKUP a few milliseconds later (committed asynchronously), so an immediate LOOKUP
    can miss. Untimed."""
    for attempt in range(100):
        req = client.create_request(seq, f"kvd-peer-{seq}-load-{attempt}", "warm")
        hit = client.lookup(req)
        if hit.is_full_hit:
            return req
        client.end_session(req)
        time.sleep(0.01)
    raise RuntimeError(f"LMCache: {mib} MiB stored but LOOKUP still hits {hit.hit_chunks}/"
                       f"{hit.total_chunks} chunks after 100 tries")


def store_retrieve(url: str, http_url: str, mib: int, repeats: int, seq_base: int) -> dict:
    import torch
    from lmcache.cli.commands.bench.server_bench.client import ServerBenchClient
    from lmcache.cli.commands.bench.server_bench.config import BenchConfig
    tokens = mib * MIB // TOKEN_BYTES
    cfg = BenchConfig(rpc_url=url, http_url=http_url, mode="cpu", transfer_mode="lmcache_driven",
                      tp_size=1, use_mla=False, num_tokens=tokens,
                      kvcache_shape_spec=SHAPE_SPEC.format(nb=NUM_BLOCKS),
                      num_blocks=NUM_BLOCKS, block_size=16)
    client = ServerBenchClient(cfg, log=lambda msg: None)
    client.start()
    store_s, load_s, verified = [], [], False
    try:
        for i in range(repeats + 1):                 # request 0 is the warm-up
            seq = seq_base + i
            req = client.create_request(seq, f"kvd-peer-{seq}-store", "cold")
            assert req.num_full_tokens == tokens, (req.num_full_tokens, tokens)
            client.lookup(req)                       # a cold miss, as a worker does first
            t0 = time.perf_counter()
            st = client.store(req, 0, tokens)
            dt_store = time.perf_counter() - t0
            client.end_session(req)
            if st is None or not st.succeeded:
                raise RuntimeError(f"LMCache STORE of {mib} MiB failed: {st}")

            req = wait_visible(client, seq, mib)
            # The worker's SHM-backed KV tensor and the request's block range (private fields of
            # the bench client: used only to check the bytes, outside the timed region).
            kv = next(iter(client._workers[0].kv_caches.values()))
            blocks = kv.narrow(1, req.block_offset, req.num_blocks)
            want = blocks.clone() if not verified else None
            blocks.zero_()
            t0 = time.perf_counter()
            rt = client.retrieve(req, 0, tokens)
            dt_load = time.perf_counter() - t0
            client.end_session(req)
            if rt is None or not rt.succeeded:
                raise RuntimeError(f"LMCache RETRIEVE of {mib} MiB failed: {rt}")
            if want is not None:
                if not torch.equal(want, blocks):
                    raise RuntimeError("LMCache RETRIEVE returned other bytes than were stored")
                verified = True
            if i > 0:
                store_s.append(dt_store)
                load_s.append(dt_load)
    finally:
        client.close()
    nbytes = tokens * TOKEN_BYTES
    res = {"mib": mib, "bytes": nbytes, "tokens": tokens, "verified": verified,
           "store_gb_per_s": summary([nbytes / s / 1e9 for s in store_s]),
           "retrieve_gb_per_s": summary([nbytes / s / 1e9 for s in load_s])}
    print(f"lmcache store    {mib:2d} MiB: median {res['store_gb_per_s']['median']:5.2f} GB/s "
          f"(min {res['store_gb_per_s']['min']:.2f}, max {res['store_gb_per_s']['max']:.2f}); "
          f"retrieve median {res['retrieve_gb_per_s']['median']:5.2f} GB/s "
          f"(min {res['retrieve_gb_per_s']['min']:.2f}, max {res['retrieve_gb_per_s']['max']:.2f})",
          flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=5720)
    ap.add_argument("--out", required=True)
    ap.add_argument("--start", action="store_true", help="start `lmcache server` and stop it after")
    ap.add_argument("--tiny", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    url = f"tcp://127.0.0.1:{a.port}"
    server = None
    if a.start:
        log = open(Path(a.out).with_suffix(".server.log"), "w")
        server = subprocess.Popen(server_cmd(a.port), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        from importlib import metadata
        res = {"lmcache": metadata.version("lmcache"), "torch": metadata.version("torch"),
               "endpoint": url, "server_cmd": " ".join(server_cmd(a.port)[1:]),
               "transfer_mode": "lmcache_driven (CPU POSIX SHM)",
               "kv_layout": SHAPE_SPEC.format(nb=NUM_BLOCKS), "repeats": a.repeats}
        res.update(tiny_requests(url, a.tiny))
        res["rows"] = [store_retrieve(url, f"http://127.0.0.1:{a.port + 1}", mib, a.repeats,
                                      seq_base=1000 * (k + 1) + int(time.time()) % 1000 * 10000)
                       for k, mib in enumerate((1, 4, 16))]
        Path(a.out).write_text(json.dumps(res, indent=1))
        print(f"lmcache_peer: wrote {a.out}")
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
