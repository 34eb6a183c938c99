"""Socket kinds and concurrent clients."""

import threading

import numpy as np
import zmq

from conftest import (TINY_MODELS, assert_bits_equal, assert_sequence, make_kv, parse_response,
                      raw_roundtrip)
from kvd import Client
from kvd.v1 import envelope_pb2


def _hello_request(rid: int) -> bytes:
    req = envelope_pb2.Request(request_id=rid)
    req.hello.protocol_versions.append(1)
    return req.SerializeToString()


def test_req_socket_client(kvd):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)  # REQ adds the empty delimiter and needs it echoed to accept the reply
    s.setsockopt(zmq.LINGER, 0)
    s.connect(kvd.endpoint)
    try:
        for rid in (1, 2, 3):
            s.send(_hello_request(rid))
            assert s.poll(5000), "no reply on a REQ socket (delimiter not echoed?)"
            r = parse_response(s.recv())
            assert r.header.request_id == rid and r.WhichOneof("body") == "hello"
            assert r.hello.shm.name == kvd.shm_name
    finally:
        s.close(linger=0)


def test_dealer_with_explicit_delimiter(kvd):
    frames = raw_roundtrip(kvd.endpoint, [b"", _hello_request(9)])
    assert len(frames) == 2 and frames[0] == b"", frames[:1]
    assert parse_response(frames[1]).header.request_id == 9


def test_pipelined_requests_matched_by_id(kvd, client):
    seqs = [client.create_sequence(TINY_MODELS[0]) for _ in range(4)]
    k, v = make_kv(TINY_MODELS[0], 5, seed=1)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(kvd.endpoint)
    try:
        from kvd.client import _tensor
        for i, seq in enumerate(seqs):
            req = envelope_pb2.Request(request_id=100 + i)
            req.append.sequence_id = seq
            req.append.keys.CopyFrom(_tensor(k))
            req.append.values.CopyFrom(_tensor(v))
            s.send(req.SerializeToString())
        got = {}
        for _ in seqs:
            assert s.poll(5000)
            r = parse_response(s.recv())
            got[r.header.request_id] = r
        assert sorted(got) == [100, 101, 102, 103]
        assert all(r.WhichOneof("body") == "append" and r.append.length == 5 for r in got.values())
    finally:
        s.close(linger=0)
    for seq in seqs:
        assert_sequence(client, seq, k, v, modes=("inline",))


def test_eight_concurrent_clients(kvd):
    errors = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        try:
            model = TINY_MODELS[i % 3]
            with Client(kvd.endpoint, timeout_ms=10000) as c:
                c.hello()
                seq = c.create_sequence(model, tenant=f"t{i}")
                k, v = make_kv(model, 15, seed=1000 + i)
                barrier.wait(10)
                t = 0
                for n, zc in ((4, False), (6, True), (5, False)):
                    c.append(seq, k[:, :, t:t + n], v[:, :, t:t + n], zero_copy=zc)
                    t += n
                    for mode in ("pages", "gather", "inline"):
                        K, V = c.query(seq, mode=mode).stacked()
                        assert_bits_equal(K, k[:, :, :t], f"client {i} {mode} K")
                        assert_bits_equal(V, v[:, :, :t], f"client {i} {mode} V")
                assert_sequence(c, seq, k, v)
                c.release(seq)
        except BaseException as e:  # reported in the main thread
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, "\n".join(errors)
    assert not any(t.is_alive() for t in threads)
    with Client(kvd.endpoint) as c:
        st = c.stats()
        assert st.sequences == 0 and st.free_pages == st.total_pages


def test_pipelined_requests_on_one_sequence_run_in_order(kvd, client):
    model = TINY_MODELS[2]
    seq = client.create_sequence(model)
    k, v = make_kv(model, 6 * 5, seed=3)
    from kvd.client import _tensor
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(kvd.endpoint)
    try:
        for i in range(6):
            req = envelope_pb2.Request(request_id=500 + i)
            req.append.sequence_id = seq
            req.append.keys.CopyFrom(_tensor(k[:, :, 5 * i:5 * i + 5]))
            req.append.values.CopyFrom(_tensor(v[:, :, 5 * i:5 * i + 5]))
            s.send(req.SerializeToString())
        got = {}
        for _ in range(6):
            assert s.poll(5000)
            r = parse_response(s.recv())
            got[r.header.request_id] = r
    finally:
        s.close(linger=0)
    assert [got[500 + i].append.first_position for i in range(6)] == [0, 5, 10, 15, 20, 25]
    assert_sequence(client, seq, k, v)
