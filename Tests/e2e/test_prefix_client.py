"""kvd.Client's prefix-reuse API (append/commit token_ids, lookup, create_sequence adopt, fork)
against the real daemon, and kvd.wire's hand-assembled inline Append with token ids. The tiny f16
model has 4 tokens per page (see test_prefix.py for the raw protocol)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from conftest import MODEL_F16, ErrorCode, KvdError, TINY, assert_sequence, make_kv
from kvd import wire
from kvd.client import _tensor
from kvd.v1 import append_pb2, envelope_pb2

P = TINY["page_tokens"]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
@pytest.mark.parametrize("tokens", [0, 1, 37])
def test_wire_inline_append_with_token_ids_equals_protobuf(dtype, tokens):
    rng = np.random.default_rng(tokens)
    k = rng.standard_normal((3, 2, tokens, 8)).astype(dtype)
    v = rng.standard_normal((3, 2, tokens, 8)).astype(dtype)
    ids = wire.token_ids(np.arange(tokens) * 70001 + 2**31)
    want = envelope_pb2.Request(request_id=2**40 + 7, protocol_version=1, append=append_pb2.AppendRequest(
        sequence_id=300, keys=_tensor(k), values=_tensor(v), token_ids=ids)).SerializeToString()
    assert wire.inline_append(2**40 + 7, 1, 300, k, v, ids) == want
    # Without ids the bytes are exactly what they were (no field 4).
    plain = envelope_pb2.Request(request_id=5, protocol_version=1, append=append_pb2.AppendRequest(
        sequence_id=300, keys=_tensor(k), values=_tensor(v))).SerializeToString()
    assert wire.inline_append(5, 1, 300, k, v) == plain == wire.inline_append(5, 1, 300, k, v, b"")
    back = envelope_pb2.Request.FromString(wire.inline_append(2**40 + 7, 1, 300, k, v, ids))
    assert np.frombuffer(back.append.token_ids, "<u4").tolist() == (np.arange(tokens) * 70001 + 2**31).tolist()


def test_token_ids_encoding():
    want = b"\x01\x00\x00\x00\xff\xff\xff\xff"
    assert wire.token_ids([1, 2**32 - 1]) == want
    assert wire.token_ids(np.array([1, 2**32 - 1], dtype=np.int64)) == want
    assert wire.token_ids(np.array([1, 2**32 - 1], dtype=">u4")) == want
    assert wire.token_ids(range(0)) == b"" and wire.token_ids([]) == b""
    for bad in ([-1], [2**32]):
        with pytest.raises(ValueError):
            wire.token_ids(bad)
    for bad in ([1.5], b"\x01\x02", [[1, 2]]):
        with pytest.raises(TypeError):
            wire.token_ids(bad)


def test_append_with_ids_lookup_adopt_fork_bit_exact(client):
    ids = list(range(1000, 1022))  # 5 full pages + 2 tokens
    k, v = make_kv(MODEL_F16, 22, seed=11)
    seq = client.create_sequence(MODEL_F16)
    assert client.lookup(MODEL_F16, ids) == 0
    client.append(seq, k[:, :, :10], v[:, :, :10], token_ids=ids[:10])
    client.append(seq, k[:, :, 10:], v[:, :, 10:], token_ids=np.array(ids[10:], np.uint32))
    assert client.lookup(MODEL_F16, ids) == 20
    assert client.lookup(MODEL_F16, np.array(ids[:9] + [7] + ids[10:])) == 8
    assert client.lookup("tiny-f32", ids) == 0
    assert_sequence(client, seq, k, v)

    # Adopt: create_sequence returns the id, create_sequence_ex the adopted count too.
    r = client.create_sequence_ex(MODEL_F16, adopt_token_ids=ids + [5, 6, 7])
    assert r.adopted_tokens == 20 and r.sequence_id != seq
    a = r.sequence_id
    kt, vt = make_kv(MODEL_F16, 5, seed=12)
    assert client.append(a, kt, vt, token_ids=[1, 2, 3, 4, 5]).first_position == 20
    assert_sequence(client, a, np.concatenate([k[:, :, :20], kt], 2), np.concatenate([v[:, :, :20], vt], 2))
    b = client.create_sequence(MODEL_F16, adopt_token_ids=ids[:12])
    assert client.stats(b).sequence.length == 12
    assert client.create_sequence_ex(MODEL_F16, adopt_token_ids=[9, 9, 9, 9]).adopted_tokens == 0
    assert client.create_sequence_ex(MODEL_F16).adopted_tokens == 0

    # Fork: a server-chosen id and a wanted one; the source stays bit-exact.
    f = client.fork(seq, 14)
    assert f not in (seq, a, b)
    assert_sequence(client, f, k[:, :, :14], v[:, :, :14])
    g = client.fork(seq, 22, new_sequence_id=777_001)
    assert g == 777_001
    kg, vg = make_kv(MODEL_F16, 3, seed=13)
    client.append(g, kg, vg, zero_copy=True)  # the fork's model is known: layout checked
    assert_sequence(client, g, np.concatenate([k, kg], 2), np.concatenate([v, vg], 2))
    assert_sequence(client, seq, k, v)
    st = client.stats().prefix
    assert st.enabled and st.cached_blocks >= 5 and st.shared_pages > 0
    for s in (seq, a, b, f, g):
        client.release(s)


def test_zero_copy_append_sends_ids_on_commit(client):
    k, v = make_kv(MODEL_F16, 9, seed=21)
    seq = client.create_sequence(MODEL_F16)
    client.append(seq, k, v, zero_copy=True, token_ids=range(50, 59))
    assert client.lookup(MODEL_F16, list(range(50, 59))) == 8
    assert_sequence(client, seq, k, v)
    s2 = client.create_sequence(MODEL_F16, adopt_token_ids=range(50, 60))
    assert client.stats(s2).sequence.length == 8
    assert_sequence(client, s2, k[:, :, :8], v[:, :, :8])
    client.release(seq)
    client.release(s2)


@pytest.mark.parametrize("zero_copy", [False, True])
def test_token_id_count_is_checked_client_side(client, zero_copy):
    k, v = make_kv(MODEL_F16, 4, seed=31)
    seq = client.create_sequence(MODEL_F16)
    with pytest.raises(KvdError) as e:
        client.append(seq, k, v, zero_copy=zero_copy, token_ids=[1, 2, 3])
    assert e.value.code == ErrorCode.INVALID_ARGUMENT
    assert client.stats(seq).sequence.length == 0  # nothing sent, nothing reserved
    assert client.stats(seq).sequence.length == 0
    client.append(seq, k, v, zero_copy=zero_copy, token_ids=[1, 2, 3, 4])
    assert client.lookup(MODEL_F16, [1, 2, 3, 4]) == 4
    client.release(seq)


def test_a_failed_commit_leaves_no_reservation_open(client, monkeypatch):
    # The Commit of a zero-copy append fails (here: before it is sent, as a timeout or an
    # interrupt would make it); the client must abort the reservation so the sequence can take
    # its next append at once instead of answering FAILED_PRECONDITION until the lease ends.
    k, v = make_kv(MODEL_F16, 4, seed=32)
    seq = client.create_sequence(MODEL_F16)
    real = client.commit

    def failing(s, rid, num_tokens=0, abort=False, **kw):
        if not abort:
            raise KvdError(ErrorCode.UNAVAILABLE, "kvd: simulated lost Commit")
        return real(s, rid, num_tokens, abort=abort, **kw)

    monkeypatch.setattr(client, "commit", failing)
    with pytest.raises(KvdError) as e:
        client.append(seq, k, v, zero_copy=True)
    assert "simulated" in e.value.message
    monkeypatch.undo()
    st = client.stats(seq).sequence
    assert st.length == 0 and st.pages == 0  # the reservation's pages went back
    client.append(seq, k, v, zero_copy=True)
    assert_sequence(client, seq, k, v)
    client.release(seq)
