"""Query's position runs (QueryRequest.position_runs → HeadView.position_runs) and the Python
client's lazy query result.

The runs are checked against the old encoding (one int32 per token, what a client that does not
opt in still gets) on the same sequence, before and after compactions that leave one, two and many
runs per head, and on a KVSharer-aliased layer; the client's decoder is fed malformed runs."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MODEL_F16, TINY, assert_bits_equal, make_kv, parse_response, raw_roundtrip
from kvd import ErrorCode, KvdError
from kvd import wire
from kvd.v1 import envelope_pb2, query_pb2

L, H = TINY["layers"], TINY["kv_heads"]
_ids = iter(range(1, 1 << 30))


def raw_query(endpoint: str, seq: int, runs: bool, mode=query_pb2.QUERY_MODE_METADATA):
    """The QueryResponse for a hand-built request (no client library in the way)."""
    req = envelope_pb2.Request(request_id=next(_ids), protocol_version=1)
    req.query.CopyFrom(query_pb2.QueryRequest(sequence_id=seq, mode=mode, position_runs=runs))
    resp = parse_response(raw_roundtrip(endpoint, [req.SerializeToString()])[-1])
    assert resp.WhichOneof("body") == "query", resp
    return resp.query


def numpy_runs(positions: np.ndarray) -> list:
    """Maximal runs of consecutive positions, computed independently of kvd and the client."""
    out = []
    for p in positions.tolist():
        if out and out[-1][0] + out[-1][1] == p:
            out[-1][1] += 1
        else:
            out.append([p, 1])
    return [tuple(r) for r in out]


def check_same(endpoint: str, seq: int, modes=(query_pb2.QUERY_MODE_METADATA,)) -> list:
    """Runs and explicit positions describe the same tokens, head by head; returns the run counts."""
    counts = []
    for mode in modes:
        old, new = raw_query(endpoint, seq, False, mode), raw_query(endpoint, seq, True, mode)
        assert len(old.heads) == len(new.heads) == L * H
        for a, b in zip(old.heads, new.heads):
            assert (a.layer, a.head, a.num_tokens, a.aliased, a.owner_layer) == (
                b.layer, b.head, b.num_tokens, b.aliased, b.owner_layer)
            assert a.position_runs == b"", "a client that did not ask gets no runs"
            assert b.positions == b"", "with runs, positions stay empty"
            want = np.frombuffer(a.positions, "<i4")
            assert len(want) == a.num_tokens
            got = wire.positions_from_runs(b.position_runs, b.num_tokens)
            assert got.dtype == np.dtype("<i4") and np.array_equal(got, want)
            runs = np.frombuffer(b.position_runs, wire.RUN_DTYPE)
            assert [(int(r["start"]), int(r["count"])) for r in runs] == numpy_runs(want), \
                "kvd sends the fewest runs"
            assert a.log_weights == b.log_weights
            counts.append(len(runs))
    return counts


def test_runs_before_compaction_are_one_per_head(kvd, client):
    seq = client.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 19, seed=1)
    client.append(seq, k, v)
    assert check_same(kvd.endpoint, seq, (query_pb2.QUERY_MODE_METADATA, query_pb2.QUERY_MODE_PAGES,
                                          query_pb2.QUERY_MODE_INLINE)) == [1] * (3 * L * H)
    got = client.query(seq, mode="metadata")
    assert got.raw.heads[0].positions == b"" and got.raw.heads[0].position_runs, "the client opts in"
    for hd in got:
        assert np.array_equal(hd.positions, np.arange(19, dtype=np.int32))


def test_empty_sequence_has_no_runs(kvd, client):
    seq = client.create_sequence(MODEL_F16)
    resp = raw_query(kvd.endpoint, seq, True)
    assert all(h.num_tokens == 0 and h.position_runs == b"" for h in resp.heads)
    assert all(len(hd.positions) == 0 for hd in client.query(seq, mode="metadata"))


def test_streamingllm_leaves_two_runs(kvd, client):
    seq = client.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 30, seed=2)
    client.append(seq, k, v)
    client.compact(seq, "streamingllm", sinks=3, recent=5)
    assert check_same(kvd.endpoint, seq, (query_pb2.QUERY_MODE_METADATA, query_pb2.QUERY_MODE_PAGES)) \
        == [2] * (2 * L * H)
    want = np.concatenate([np.arange(3), np.arange(25, 30)]).astype(np.int32)
    for hd in client.query(seq, mode="metadata"):
        assert np.array_equal(hd.positions, want)
    # Appending after the compaction extends the last run.
    k2, v2 = make_kv(MODEL_F16, 4, seed=3)
    client.append(seq, k2, v2)
    assert check_same(kvd.endpoint, seq) == [2] * (L * H)


def test_knorm_leaves_many_runs_and_inline_matches(kvd, client):
    seq = client.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 48, seed=4)
    client.append(seq, k, v)
    client.compact(seq, "knorm", budget=12, window=2)
    counts = check_same(kvd.endpoint, seq, (query_pb2.QUERY_MODE_METADATA, query_pb2.QUERY_MODE_INLINE))
    assert max(counts) > 2, f"key norms should scatter the kept tokens, got runs {counts}"
    # Through the client: positions from runs, K/V from the inline reply, all consistent.
    res = client.query(seq, mode="inline")
    for hd in res:
        assert_bits_equal(hd.keys, k[hd.layer, hd.head, hd.positions])


def test_aliased_layer_runs(kvd, client):
    seq = client.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 21, seed=5)
    client.append(seq, k, v)
    client.compact(seq, "streamingllm", sinks=2, recent=6)
    client.compact(seq, "kvsharer", alias_map="1:0")
    check_same(kvd.endpoint, seq)
    res = client.query(seq, mode="metadata")
    for h in range(H):
        owner, alias = res[0, h], res[1, h]
        assert alias.aliased and alias.owner_layer == 0 and not owner.aliased
        assert np.array_equal(alias.positions, owner.positions)
    # copy=True keeps every field, the alias included.
    cp = client.query(seq, mode="metadata", copy=True)
    for a, b in zip(res, cp):
        assert (a.layer, a.head, a.num_tokens, a.aliased, a.owner_layer) == (
            b.layer, b.head, b.num_tokens, b.aliased, b.owner_layer)
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.log_weights, b.log_weights)
        assert b.positions.flags.owndata


def test_lazy_result_builds_only_touched_heads(client):
    seq = client.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 9, seed=6)
    client.append(seq, k, v)
    res = client.query(seq, mode="pages")
    assert len(res) == L * H and all(h is None for h in res._built)
    hd = res[1, 0]
    assert sum(h is not None for h in res._built) == 1
    assert res[1, 0] is hd, "a head is built once"
    assert_bits_equal(hd.keys, k[1, 0])
    assert res.layers == [0, 1]
    K, V = res.stacked()
    assert_bits_equal(K, k)
    assert_bits_equal(V, v)


# --- the client's decoder on hostile bytes (no daemon) ------------------------------------------

def _runs(*pairs) -> bytes:
    return np.array(list(pairs), dtype=wire.RUN_DTYPE).tobytes()


@pytest.mark.parametrize("runs, n, why", [
    (b"\x01\x02\x03", 1, "multiple of 8"),
    (_runs((0, 5)), 4, "add up to 5"),
    (_runs((0, 2), (5, 2)), 5, "add up to 4"),
    (_runs((-1, 2)), 2, "0 .. 2**31-1"),
    (_runs((2**31 - 2, 3)), 3, "0 .. 2**31-1"),
    (_runs((2**31 - 5, 2), (2**31 - 2, 3)), 5, "0 .. 2**31-1"),
    (_runs((10, 2), (11, 2)), 4, "ascending"),
    (_runs((10, 2), (3, 2)), 4, "ascending"),
    (_runs((1, 0), (3, 2)), 2, "empty"),
    (_runs((0, 0xFFFFFFFF), (0, 0xFFFFFFFF)), 3, "add up to"),
    (b"", 3, "add up to 0"),
])
def test_malformed_runs_raise(runs, n, why):
    with pytest.raises(KvdError) as e:
        wire.positions_from_runs(runs, n)
    assert e.value.code == ErrorCode.INTERNAL and why in str(e.value)


def test_valid_runs_decode_like_numpy():
    assert wire.positions_from_runs(_runs((2**31 - 3, 3)), 3).tolist() == [2**31 - 3, 2**31 - 2, 2**31 - 1]
    rng = np.random.default_rng(7)
    for _ in range(200):
        keep = np.sort(rng.choice(1000, rng.integers(1, 200), replace=False)).astype(np.int32)
        runs = numpy_runs(keep)
        got = wire.positions_from_runs(_runs(*runs), len(keep))
        assert np.array_equal(got, keep)


def test_random_bytes_never_crash_the_decoder():
    rng = np.random.default_rng(8)
    for i in range(3000):
        b = rng.integers(0, 256, rng.integers(0, 40), dtype=np.uint8).tobytes()
        n = int(rng.integers(0, 2**32)) if i % 2 else int(rng.integers(0, 64))
        try:
            out = wire.positions_from_runs(b, n)
        except KvdError as e:
            assert e.code == ErrorCode.INTERNAL
        else:
            assert len(out) == n and out.dtype == np.dtype("<i4")
            assert n == 0 or (np.all(np.diff(out.astype(np.int64)) > 0) and out[0] >= 0)
