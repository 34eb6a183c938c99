"""Every bad input gets its documented error code, changes nothing, and kvd keeps answering.

Each test also checks a *witness* sequence (other data, created first) afterwards: bit-exact data,
length, generation, no reservation, and that Hello still works.
"""

import numpy as np
import pytest
import zmq

from conftest import (MAX_MESSAGE_BYTES, MAX_TOKENS_PER_APPEND, MODEL_F16, MODEL_F32,
                      assert_sequence, free_pages, make_kv, parse_response, raw_roundtrip)
from kvd import ErrorCode, KvdError
from kvd.client import _tensor
from kvd.v1 import append_pb2, common_pb2, envelope_pb2

E = ErrorCode


def expect(code, fn, *args, **kw) -> KvdError:
    with pytest.raises(KvdError) as ei:
        fn(*args, **kw)
    assert ei.value.code == code, f"expected {code.name}, got {ei.value}"
    assert ei.value.message.startswith("kvd: "), ei.value.message
    return ei.value


def raw(kvd, payload: bytes) -> envelope_pb2.Response:
    return parse_response(raw_roundtrip(kvd.endpoint, [payload])[-1])


def assert_error(resp, code, request_id):
    assert resp.WhichOneof("body") == "error", resp
    assert resp.error.code == code, f"expected {code.name}, got {resp.error}"
    assert resp.error.message.startswith("kvd: ")
    assert resp.header.request_id == request_id


@pytest.fixture
def seq(client):
    """A fresh tiny-f16 sequence holding 3 tokens; returns (id, K, V)."""
    s = client.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 3, seed=77)
    client.append(s, k, v)
    return s, k, v


# ----------------------------------------------------------------------------- framing & envelope

@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08"],
                         ids=["bad-varint", "truncated-field", "truncated-id"])
def test_undecodable_bytes(kvd, witness, payload):
    assert_error(raw(kvd, payload), E.INVALID_ARGUMENT, 0)
    witness.check()


def test_empty_frame(kvd, witness):
    assert_error(raw(kvd, b""), E.INVALID_ARGUMENT, 0)
    witness.check()


def test_request_without_body(kvd, witness):
    assert_error(raw(kvd, envelope_pb2.Request(request_id=5).SerializeToString()),
                 E.INVALID_ARGUMENT, 5)
    witness.check()


def test_unknown_request_kind(kvd, witness):
    # A body field this schema does not have (a request kind from the future): field 40, bytes.
    payload = envelope_pb2.Request(request_id=6).SerializeToString() + b"\xc2\x02\x00"
    assert_error(raw(kvd, payload), E.UNIMPLEMENTED, 6)
    witness.check()


def test_unsupported_protocol_version(kvd, witness):
    req = envelope_pb2.Request(request_id=8, protocol_version=2)
    req.stats.SetInParent()
    assert_error(raw(kvd, req.SerializeToString()), E.UNIMPLEMENTED, 8)
    witness.check()


def test_request_id_zero(kvd, witness):
    req = envelope_pb2.Request(request_id=0)
    req.hello.SetInParent()
    assert_error(raw(kvd, req.SerializeToString()), E.INVALID_ARGUMENT, 0)
    witness.check()


def test_request_id_reused(kvd, witness):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(kvd.endpoint)
    try:
        req = envelope_pb2.Request(request_id=31337)
        req.stats.SetInParent()
        for expected_ok in (True, False):
            s.send(req.SerializeToString())
            assert s.poll(5000)
            r = parse_response(s.recv())
            assert r.header.request_id == 31337
            if expected_ok:
                assert r.WhichOneof("body") == "stats"
            else:
                assert_error(r, E.ALREADY_EXISTS, 31337)
        # another connection may use the same id
        ok = raw(kvd, req.SerializeToString())
        assert ok.WhichOneof("body") == "stats"
    finally:
        s.close(linger=0)
    witness.check()


def test_message_too_large(client, witness):
    e = expect(E.INVALID_ARGUMENT, client.create_sequence, MODEL_F16,
               tenant="x" * (MAX_MESSAGE_BYTES + 1024))
    assert client.stats().sequences == 1
    witness.check()


def test_message_too_large_append(client, witness, seq):
    s, k, v = seq
    # a valid-looking append (tokens <= the limit) padded past max_message_bytes with extra bytes
    big = np.zeros((2, 2, MAX_TOKENS_PER_APPEND, 8), np.float32)
    req = append_pb2.AppendRequest(sequence_id=s, keys=_tensor(big), values=_tensor(big))
    req.keys.data += b"\0" * MAX_MESSAGE_BYTES
    expect(E.INVALID_ARGUMENT, client.call, "append", req)
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


# ----------------------------------------------------------------------------- names

def test_unknown_model(client, witness):
    expect(E.NOT_FOUND, client.create_sequence, "no-such-model")
    assert client.stats().sequences == 1
    witness.check()


def test_unknown_sequence(client, witness):
    k, v = make_kv(MODEL_F16, 2, seed=1)
    ghost = witness.seq + 1000
    for call in (lambda: client.append(ghost, k, v), lambda: client.query(ghost),
                 lambda: client.reserve(ghost, 2), lambda: client.commit(ghost, 1, 1),
                 lambda: client.compact(ghost), lambda: client.release(ghost),
                 lambda: client.stats(ghost)):
        expect(E.NOT_FOUND, call)
    witness.check()


def test_unknown_method(client, witness, seq):
    s, k, v = seq
    expect(E.NOT_FOUND, client.compact, s, "no-such-method")
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


# ----------------------------------------------------------------------------- tensors

def _append_expect(client, s, k, v, code=E.INVALID_ARGUMENT):
    before = free_pages(client)
    expect(code, client.append, s, k, v)
    assert free_pages(client) == before


def test_wrong_dtype(client, witness, seq):
    s, k, v = seq
    k32, v32 = make_kv(MODEL_F32, 2, seed=1)
    _append_expect(client, s, k32, v32)                      # f32 into an f16 model
    _append_expect(client, s, k[:, :, :1], v32[:, :, :1])    # K f16, V f32
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


@pytest.mark.parametrize("shape", [(3, 2, 2, 8), (2, 3, 2, 8), (2, 2, 2, 16), (1, 2, 2, 8),
                                   (2, 2, 8), (2, 2, 2, 8, 1)])
def test_shape_not_matching_layout(client, witness, seq, shape):
    s, k, v = seq
    bad = np.ones(shape, np.float16)
    _append_expect(client, s, bad, bad)
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


def test_key_and_value_shapes_differ(client, witness, seq):
    s, k, v = seq
    k2, v2 = make_kv(MODEL_F16, 3, seed=2)
    _append_expect(client, s, k2, v2[:, :, :2])
    _append_expect(client, s, k2[:, :, :2], v2)
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


def test_tensor_data_length_not_matching_shape(client, witness, seq):
    s, k, v = seq
    k2, v2 = make_kv(MODEL_F16, 2, seed=2)
    req = append_pb2.AppendRequest(sequence_id=s, keys=_tensor(k2), values=_tensor(v2))
    req.values.data = req.values.data[:-2]
    expect(E.INVALID_ARGUMENT, client.call, "append", req)
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


def test_zero_tokens(client, witness, seq):
    s, k, v = seq
    empty = np.zeros((2, 2, 0, 8), np.float16)
    _append_expect(client, s, empty, empty)
    expect(E.INVALID_ARGUMENT, client.reserve, s, 0)
    assert client.stats(s).sequence.reserved_tokens == 0
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


def test_more_tokens_than_max_per_append(client, witness, seq):
    s, k, v = seq
    k2, v2 = make_kv(MODEL_F16, MAX_TOKENS_PER_APPEND + 1, seed=3)
    _append_expect(client, s, k2, v2)
    before = free_pages(client)
    expect(E.INVALID_ARGUMENT, client.reserve, s, MAX_TOKENS_PER_APPEND + 1)
    assert free_pages(client) == before
    client.append(s, k2[:, :, :MAX_TOKENS_PER_APPEND], v2[:, :, :MAX_TOKENS_PER_APPEND])  # ok
    witness.check()


# ----------------------------------------------------------------------------- reservations

def test_commit_without_reserve(client, witness, seq):
    s, k, v = seq
    expect(E.NOT_FOUND, client.commit, s, 123456, 1)
    expect(E.NOT_FOUND, client.commit, s, 123456, abort=True)
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


def test_commit_more_than_reserved(client, witness, seq):
    s, k, v = seq
    k2, v2 = make_kv(MODEL_F16, 4, seed=5)
    res = client.reserve(s, 4)
    client.arena.write_reservation(res, k2, v2)
    expect(E.FAILED_PRECONDITION, client.commit, s, res.reservation_id, 5)
    st = client.stats(s).sequence
    assert (st.length, st.reserved_tokens) == (3, 4), "the failed commit changed nothing"
    # the reservation is still open and commits fine
    assert client.commit(s, res.reservation_id, 4).length == 7
    assert_sequence(client, s, np.concatenate([k, k2], 2), np.concatenate([v, v2], 2))
    witness.check()


def test_commit_of_other_sequences_reservation(client, witness, seq):
    s, k, v = seq
    res = client.reserve(witness.seq, 2)
    expect(E.NOT_FOUND, client.commit, s, res.reservation_id, 2)
    client.commit(witness.seq, res.reservation_id, abort=True)
    assert_sequence(client, s, k, v, modes=("inline",))
    witness.check()


def test_operations_while_reservation_open(client, witness, seq):
    s, k, v = seq
    res = client.reserve(s, 2)
    pages = free_pages(client)
    k2, v2 = make_kv(MODEL_F16, 2, seed=6)
    expect(E.FAILED_PRECONDITION, client.append, s, k2, v2)
    expect(E.FAILED_PRECONDITION, client.reserve, s, 1)
    expect(E.FAILED_PRECONDITION, client.compact, s, "streamingllm", sinks=1, recent=1)
    assert free_pages(client) == pages
    client.commit(s, res.reservation_id, abort=True)
    assert_sequence(client, s, k, v)
    client.append(s, k2, v2)  # allowed again
    witness.check()


# ----------------------------------------------------------------------------- compaction params

@pytest.mark.parametrize("params", [
    dict(sinks=-1, recent=4),
    dict(sinks=2, recent=-3),
    dict(sinks=0, recent=0),
    dict(sinks=2, recent=2, bogus=1),
    dict(sinks="4", recent=2),
    dict(sinks=2, recent=2.5),
    dict(sinks=True, recent=2),
], ids=["neg-sinks", "neg-recent", "zero-both", "unknown-param", "str-sinks", "float-recent",
        "bool-sinks"])
def test_bad_compaction_params(client, witness, seq, params):
    s, k, v = seq
    client.append(s, *make_kv(MODEL_F16, 10, seed=8))
    q = client.query(s, mode="inline", copy=True)
    before = free_pages(client)
    expect(E.INVALID_ARGUMENT, client.compact, s, "streamingllm", **params)
    after = client.query(s, mode="inline", copy=True)
    assert after.generation == q.generation == 1 and free_pages(client) == before
    for a, b in zip(q, after):
        assert a.keys.tobytes() == b.keys.tobytes() and a.positions.tolist() == b.positions.tolist()
    witness.check()


# ----------------------------------------------------------------------------- release

def test_release_twice(client, witness, seq):
    s, _, _ = seq
    client.release(s)
    expect(E.NOT_FOUND, client.release, s)
    witness.check()


# ----------------------------------------------------------------------------- arena full

def _fill(client, model=MODEL_F32, chunk=MAX_TOKENS_PER_APPEND):
    """Append 64-token chunks to a filler sequence until RESOURCE_EXHAUSTED; returns it."""
    filler = client.create_sequence(model, tenant="filler")
    k, v = make_kv(model, chunk, seed=9)
    for _ in range(1000):
        before = free_pages(client)
        length = client.stats(filler).sequence.length
        try:
            client.append(filler, k, v)
        except KvdError as e:
            assert e.code == E.RESOURCE_EXHAUSTED, str(e)
            assert free_pages(client) == before, "a refused append allocates nothing"
            assert client.stats(filler).sequence.length == length
            return filler
    pytest.fail("the arena never filled up")


def test_append_when_arena_full(client, witness, seq):
    s, k, v = seq
    _fill(client)
    free = free_pages(client)
    assert free < 4 * (MAX_TOKENS_PER_APPEND // 4)
    k2, v2 = make_kv(MODEL_F16, MAX_TOKENS_PER_APPEND, seed=10)
    for zero_copy in (False, True):
        expect(E.RESOURCE_EXHAUSTED, client.append, s, k2, v2, zero_copy=zero_copy)
        st = client.stats(s).sequence
        assert (st.length, st.generation, st.reserved_tokens) == (3, 1, 0)
        assert free_pages(client) == free
    assert_sequence(client, s, k, v)
    # what still fits is accepted: 1 token goes into the free slot of each head's page
    client.append(s, k2[:, :, :1], v2[:, :, :1])
    assert free_pages(client) == free
    witness.check()


def test_reserve_when_arena_full(client, witness, seq):
    s, k, v = seq
    _fill(client)
    free = free_pages(client)
    expect(E.RESOURCE_EXHAUSTED, client.reserve, s, MAX_TOKENS_PER_APPEND)
    st = client.stats(s).sequence
    assert (st.length, st.reserved_tokens, st.pages) == (3, 0, 4)
    assert free_pages(client) == free
    res = client.reserve(s, 1)  # fits the free slot; proves no stale reservation is open
    client.commit(s, res.reservation_id, abort=True)
    assert_sequence(client, s, k, v)
    witness.check()


def test_full_arena_recovers_after_release(client, witness):
    filler = _fill(client)
    client.release(filler)
    total = client.stats().total_pages
    assert free_pages(client) == total - 4 * 2  # only the witness's 2 pages per head remain
    witness.check()


def test_gather_when_staging_full(client, witness):
    # wide-f32: 512 bytes of K+V per token; 600 tokens need ~300 KiB of the 256 KiB staging area
    from conftest import MODEL_WIDE
    s = client.create_sequence(MODEL_WIDE)
    k, v = make_kv(MODEL_WIDE, 600, seed=13)
    for t in range(0, 600, MAX_TOKENS_PER_APPEND):
        client.append(s, k[:, :, t:t + MAX_TOKENS_PER_APPEND], v[:, :, t:t + MAX_TOKENS_PER_APPEND])
    expect(E.RESOURCE_EXHAUSTED, client.query, s, mode="gather")
    assert client.stats().staging_used_bytes == 0
    assert_sequence(client, s, k, v, modes=("pages", "inline"))
    witness.check()
