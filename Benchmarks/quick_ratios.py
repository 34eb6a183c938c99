"""Quick overhead ratios for a running kvd, each against a baseline measured in the same run.

    python Benchmarks/quick_ratios.py [--endpoint ipc:///tmp/kvd-default.sock] [--model smollm2-135m]

Prints: Stats round trip vs a raw pyzmq ROUTER echo (separate process, same transport); inline and
zero-copy append and query throughput vs a single-thread numpy copy of the same bytes. Machines here
are shared and noisy: read the ratios, not the absolute numbers. (The full suite is issue 7's.)
"""
import argparse
import multiprocessing as mp
import statistics
import tempfile
import time

import numpy as np
import zmq

from kvd import Client


def echo_server(endpoint: str, ready) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.bind(endpoint)
    ready.set()
    while True:
        frames = s.recv_multipart()
        if frames[-1] == b"stop":
            s.send_multipart(frames)
            return
        s.send_multipart(frames)


def percentiles(samples):
    samples = sorted(samples)
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def echo_roundtrip(n: int, payload: bytes):
    endpoint = f"ipc://{tempfile.mkdtemp()}/echo.sock"
    ready = mp.Event()
    p = mp.Process(target=echo_server, args=(endpoint, ready), daemon=True)
    p.start()
    ready.wait()
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.connect(endpoint)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s.send(payload)
        s.recv()
        times.append(time.perf_counter() - t)
    s.send(b"stop")
    s.recv()
    p.join()
    return times


def best_of(fn, repeats=5):
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", default="ipc:///tmp/kvd-default.sock")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()

    with Client(a.endpoint) as c:
        hello = c.hello()
        m = next(x for x in hello.models if x.name == a.model)
        # Stats round trip vs echo of a message of the same size as the Stats request.
        kvd_times = []
        for _ in range(a.n):
            t = time.perf_counter()
            c.stats()
            kvd_times.append(time.perf_counter() - t)
        echo_times = echo_roundtrip(a.n, b"\x08\x01\x92\x01\x00")
        k50, k99 = percentiles(kvd_times)
        e50, e99 = percentiles(echo_times)
        print(f"| Stats round trip p50 | {k50*1e6:.1f} µs | echo {e50*1e6:.1f} µs | ratio {k50/e50:.2f}× |")
        print(f"| Stats round trip p99 | {k99*1e6:.1f} µs | echo {e99*1e6:.1f} µs | ratio {k99/e99:.2f}× |")

        dt = np.float16 if m.dtype == 1 else np.float32
        shape = (m.layers, m.kv_heads, a.tokens, m.head_dim)
        k = np.random.randn(*shape).astype(dt)
        v = np.random.randn(*shape).astype(dt)
        nbytes = k.nbytes + v.nbytes
        dst_k, dst_v = np.empty_like(k), np.empty_like(v)
        memcpy = best_of(lambda: (np.copyto(dst_k, k), np.copyto(dst_v, v)))

        def append(zero_copy):
            seq = c.create_sequence(a.model)
            t = _timed(lambda: c.append(seq, k, v, zero_copy=zero_copy))
            c.release(seq)
            return t

        seq = c.create_sequence(a.model)
        c.append(seq, k, v)
        rows = [
            ("append inline", min(append(False) for _ in range(5))),
            ("append zero-copy", min(append(True) for _ in range(5))),
            ("query inline (copy)", best_of(lambda: c.query(seq, mode="inline"))),
            ("query gather + stacked", best_of(lambda: c.query(seq, mode="gather").stacked())),
            ("query pages + stacked", best_of(lambda: c.query(seq).stacked())),
        ]
        c.release(seq)
        print(f"| memcpy (numpy, 1 thread) of {nbytes/2**20:.1f} MiB | {nbytes/memcpy/1e9:.2f} GB/s | 1.00× |")
        for name, t in rows:
            print(f"| {name} | {nbytes/t/1e9:.2f} GB/s | {memcpy/t:.2f}× memcpy |")


if __name__ == "__main__":
    main()
