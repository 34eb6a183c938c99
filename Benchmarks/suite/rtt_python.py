"""Section 1 from Python: Stats and metadata-only Query round trips through kvd against the Swift
echo, on ipc and tcp, all from pyzmq. Each request is sent two ways: as prebuilt bytes on a raw
pyzmq DEALER (kvd's own cost: the daemon decodes, handles, encodes) and through `kvd.Client` (plus
Python protobuf on both ends). The echo gets a message of the same size. kvd and echo alternate in
blocks so machine noise hits both alike."""
import time

import zmq

from kvd import Client
from kvd.v1 import envelope_pb2, query_pb2, stats_pb2

from .summary import percentile

BLOCK = 200


def _prebuilt(kind: str, seq: int) -> bytes:
    req = envelope_pb2.Request(request_id=1, protocol_version=1)
    if kind == "stats":
        req.stats.CopyFrom(stats_pb2.StatsRequest())
    else:
        req.query.CopyFrom(query_pb2.QueryRequest(sequence_id=seq, mode=query_pb2.QUERY_MODE_METADATA))
    return req.SerializeToString()


def _raw_loop(sock, payload: bytes, n: int, out: list) -> None:
    for _ in range(n):
        t = time.perf_counter_ns()
        sock.send(payload)
        sock.recv()
        out.append(time.perf_counter_ns() - t)


def measure(kvd_endpoint: str, echo_endpoint: str, model: str, n: int) -> list:
    """Rows for one transport: {name, p50_us, p99_us} for kvd (raw and client) and the echo."""
    ctx = zmq.Context.instance()
    rows = []
    with Client(kvd_endpoint) as client:
        client.hello()
        seq = client.create_sequence(model)
        raw, echo = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
        raw.connect(kvd_endpoint)
        echo.connect(echo_endpoint)
        calls = {"stats": lambda: client.stats(), "query_metadata": lambda: client.query(seq, mode="metadata")}
        for kind in ("stats", "query_metadata"):
            payload = _prebuilt(kind, seq)
            same_size = b"\x00" * len(payload)
            samples = {"kvd_raw": [], "kvd_client": [], "echo": []}
            _raw_loop(raw, payload, BLOCK, [])   # warm-up
            _raw_loop(echo, same_size, BLOCK, [])
            done = 0
            while done < n:
                _raw_loop(raw, payload, BLOCK, samples["kvd_raw"])
                _raw_loop(echo, same_size, BLOCK, samples["echo"])
                for _ in range(BLOCK):
                    t = time.perf_counter_ns()
                    calls[kind]()
                    samples["kvd_client"].append(time.perf_counter_ns() - t)
                done += BLOCK
            for name, s in samples.items():
                rows.append({"request": kind, "path": name, "bytes": len(payload),
                             "p50_us": percentile(s, 0.5) / 1e3, "p99_us": percentile(s, 0.99) / 1e3})
        raw.close(0)
        echo.close(0)
        client.release(seq)
    return rows
