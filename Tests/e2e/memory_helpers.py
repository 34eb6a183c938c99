"""Shared pieces of the memory-manager tests: a config with short leases, raw KeepAlive / Pin
requests (independent of the client's own helpers), an events subscriber and fill helpers."""
from __future__ import annotations

import time

import numpy as np
import zmq

from conftest import MODEL_F16, TINY, make_kv, model_entry
from kvd import KvdError
from kvd.v1 import memory_pb2, sequence_pb2

# Tiny f16 pages: 2 * page_tokens 4 * head_dim 8 * 2 bytes = 128 bytes; 4 heads per sequence.
HEADS = TINY["layers"] * TINY["kv_heads"]


def memory_config(cfg: dict, workdir_endpoint: str, **memory) -> None:
    """Only the tiny f16 model (small pages, many of them), room for many sequences, and a
    `memory:` section with fast ticks; `memory` overrides its keys."""
    cfg["server"]["max_sequences"] = 1024
    cfg["arena"]["size_bytes"] = "1MiB"
    cfg["arena"]["staging_bytes"] = "64KiB"
    cfg["models"] = [model_entry(MODEL_F16, "f16", **TINY)]
    cfg["policies"] = {"pressure": {"method": "streamingllm", "params": {"sinks": 4, "recent": 12}}}
    events = workdir_endpoint.rsplit("/", 1)[0] + "/events.sock"
    cfg["memory"] = {"lease_seconds": 30, "orphan_grace_seconds": 600, "high": 0.9, "low": 0.8,
                     "interval_ms": 50, "busy_ms": 300, "floor_tokens": 8,
                     "compress_policy": "pressure", "fallback_policy": "pressure",
                     "events_endpoint": events, **memory}


def keep_alive(client, adopt=()) -> memory_pb2.KeepAliveResponse:
    return client.call("keep_alive", memory_pb2.KeepAliveRequest(sequence_ids=list(adopt)))


def pin(client, seq: int, pinned: bool = True) -> memory_pb2.PinResponse:
    return client.call("pin", memory_pb2.PinRequest(sequence_id=seq, pinned=pinned))


def create(client, pinned: bool = False) -> int:
    return client.call("create_sequence", sequence_pb2.CreateSequenceRequest(
        model=MODEL_F16, pinned=pinned)).sequence_id


def filled(client, tokens: int, seed: int, pinned: bool = False):
    """A new sequence holding `tokens` random tokens; returns (id, keys, values)."""
    seq = create(client, pinned)
    k, v = make_kv(MODEL_F16, tokens, seed)
    for start in range(0, tokens, 64):
        client.append(seq, k[:, :, start:start + 64], v[:, :, start:start + 64])
    return seq, k, v


def read_back(client, seq: int):
    """Every head's K and V as [layers, kv_heads, tokens, head_dim] (full, uncompacted sequences)."""
    r = client.query(seq, mode="inline")
    ks = np.stack([np.stack([r[l, h].keys for h in range(TINY["kv_heads"])]) for l in range(TINY["layers"])])
    vs = np.stack([np.stack([r[l, h].values for h in range(TINY["kv_heads"])]) for l in range(TINY["layers"])])
    return ks, vs


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class EventLog:
    """A SUB socket on the events endpoint, collecting decoded kvd.v1.Event messages."""

    def __init__(self, endpoint: str, topic: str = "kvd."):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.sock.connect(endpoint)
        self.events: list = []
        time.sleep(0.3)  # PUB/SUB: a subscription takes effect after the connection is up

    def drain(self, wait_s: float = 0.0) -> list:
        deadline = time.monotonic() + wait_s
        while True:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(left):
                return self.events
            topic, payload = self.sock.recv_multipart()
            ev = memory_pb2.Event()
            ev.ParseFromString(payload)
            assert topic == f"kvd.{ev.tenant}".encode()
            self.events.append(ev)

    def close(self):
        self.sock.close(linger=0)


def error_code(fn) -> KvdError:
    try:
        fn()
    except KvdError as e:
        return e
    raise AssertionError("expected a KvdError")
