"""Prefix reuse against the real daemon: token ids on Append/Commit index full pages by chained
block hashes; Lookup finds the longest cached prefix; CreateSequence adopts it (shared pages);
Fork shares a live sequence's prefix; everything copy-on-write and bit-exact; tenants never share.
The tiny f16 model has 4 tokens per page and 4 (layer, head) pairs, so a page-aligned prefix of
T tokens is T / 4 pages per head, 4 * T / 4 = T pages in all.
"""
from __future__ import annotations

import struct
import uuid

import numpy as np

from conftest import MODEL_F16, Client, ErrorCode, TINY, assert_sequence, make_kv
from kvd.client import _tensor
from kvd.v1 import append_pb2, prefix_pb2, sequence_pb2
from memory_helpers import error_code

P = TINY["page_tokens"]
HEADS = TINY["layers"] * TINY["kv_heads"]


def ids_bytes(ids) -> bytes:
    return struct.pack(f"<{len(ids)}I", *ids)


def append(c: Client, seq: int, k, v, ids=None):
    req = append_pb2.AppendRequest(sequence_id=seq, keys=_tensor(k), values=_tensor(v))
    if ids is not None:
        req.token_ids = ids_bytes(ids)
    return c.call("append", req)


def lookup(c: Client, ids) -> prefix_pb2.LookupResponse:
    return c.call("lookup", prefix_pb2.LookupRequest(model=MODEL_F16, token_ids=ids_bytes(ids)))


def create(c: Client, adopt=None) -> sequence_pb2.CreateSequenceResponse:
    req = sequence_pb2.CreateSequenceRequest(model=MODEL_F16)
    if adopt is not None:
        req.adopt_token_ids = ids_bytes(adopt)
    return c.call("create_sequence", req)


def fork(c: Client, seq: int, length: int) -> prefix_pb2.ForkResponse:
    return c.call("fork", prefix_pb2.ForkRequest(sequence_id=seq, length=length))


def written(c: Client, tokens: int, seed: int, ids=None):
    """A new sequence holding `tokens` random tokens appended with `ids` (default 0..tokens-1)."""
    ids = list(range(tokens)) if ids is None else ids
    seq = create(c).sequence_id
    k, v = make_kv(MODEL_F16, tokens, seed)
    for s in range(0, tokens, 64):
        append(c, seq, k[:, :, s:s + 64], v[:, :, s:s + 64], ids[s:s + 64])
    return seq, k, v, ids


def test_lookup_finds_whole_pages_and_stops_at_a_different_token(client):
    seq, _, _, ids = written(client, 22, seed=1)  # 5 full pages and 2 tokens
    assert lookup(client, ids).tokens == 20
    r = lookup(client, ids + [999])
    assert (r.tokens, r.pages_per_head, r.page_tokens) == (20, 5, P)
    changed = list(ids)
    changed[9] = 12345  # in block 2: blocks 0 and 1 still match
    assert lookup(client, changed).tokens == 8
    assert lookup(client, [7] + ids[1:]).tokens == 0
    assert lookup(client, ids[:3]).tokens == 0  # less than a page never hits
    st = client.stats().prefix
    assert st.enabled and st.cached_blocks == 5 and st.cached_pages == 5 * HEADS
    assert st.hits == 5 + 5 + 2 and st.misses >= 3
    client.release(seq)


def test_adopt_then_diverge_is_bit_exact_and_shares_the_prefix(client):
    total = client.stats().total_pages
    seq, k, v, ids = written(client, 16, seed=2)
    free_after_source = client.stats().free_pages
    a = create(client, adopt=ids + [1, 2, 3])
    b = create(client, adopt=ids)
    assert a.adopted_tokens == 16 and b.adopted_tokens == 16
    # Adopting allocates nothing: the prefix pages are held once.
    assert client.stats().free_pages == free_after_source
    ka, va = make_kv(MODEL_F16, 6, seed=3)
    kb, vb = make_kv(MODEL_F16, 9, seed=4)
    assert append(client, a.sequence_id, ka, va).first_position == 16
    append(client, b.sequence_id, kb, vb)
    assert_sequence(client, a.sequence_id, np.concatenate([k, ka], 2), np.concatenate([v, va], 2))
    assert_sequence(client, b.sequence_id, np.concatenate([k, kb], 2), np.concatenate([v, vb], 2))
    assert_sequence(client, seq, k, v)
    st = client.stats()
    # Source, a and b hold the 16 prefix pages (4 per head): shared by 3 sequences + the index.
    assert st.prefix.shared_pages == 16 and st.prefix.pages_saved == 32
    assert st.prefix.bytes_saved == 32 * st.page_bytes
    # a grew by 2 pages per head, b by 3: only those are new.
    assert st.free_pages == free_after_source - (2 + 3) * HEADS
    for s in (seq, a.sequence_id, b.sequence_id):
        client.release(s)
    st = client.stats()
    # Every page back except the cached blocks only the index holds.
    assert st.prefix.cached_pages == st.prefix.unused_pages == 16
    assert st.free_pages + st.prefix.unused_pages == total


def test_fork_then_compact_one_side_leaves_the_other_bit_exact(client):
    total = client.stats().total_pages
    seq, k, v, ids = written(client, 30, seed=5)
    f = fork(client, seq, 26)
    assert f.length == 26 and f.generation == 1 and f.sequence_id != seq
    kf, vf = make_kv(MODEL_F16, 5, seed=6)
    append(client, f.sequence_id, kf, vf, list(range(100, 105)))
    client.compact(seq, "streamingllm", sinks=2, recent=8)
    assert_sequence(client, f.sequence_id, np.concatenate([k[:, :, :26], kf], 2),
                    np.concatenate([v[:, :, :26], vf], 2))
    # And the other way round: compacting the fork leaves a fresh fork of the source intact.
    g = fork(client, f.sequence_id, 31)
    client.compact(f.sequence_id, "streamingllm", sinks=2, recent=8)
    assert_sequence(client, g.sequence_id, np.concatenate([k[:, :, :26], kf], 2),
                    np.concatenate([v[:, :, :26], vf], 2))
    # A compacted sequence cannot be forked.
    assert error_code(lambda: fork(client, seq, 4)).code == ErrorCode.FAILED_PRECONDITION
    for s in (seq, f.sequence_id, g.sequence_id):
        client.release(s)
    st = client.stats()
    assert st.free_pages + st.prefix.unused_pages == total
    assert st.prefix.cached_pages == st.prefix.unused_pages


def test_forked_sequence_keeps_indexing_its_blocks(client):
    seq, k, v, ids = written(client, 10, seed=7)
    f = fork(client, seq, 10)
    kf, vf = make_kv(MODEL_F16, 6, seed=8)
    append(client, f.sequence_id, kf, vf, [50, 51, 52, 53, 54, 55])
    # Block 2 of the fork = ids[8:10] + [50, 51]; block 3 is [52..55].
    assert lookup(client, ids + [50, 51, 52, 53, 54, 55]).tokens == 16
    c = create(client, adopt=ids + [50, 51, 52, 53, 54, 55, 56])
    assert c.adopted_tokens == 16
    assert_sequence(client, c.sequence_id, np.concatenate([k, kf], 2), np.concatenate([v, vf], 2))


def test_reserve_commit_with_token_ids_indexes(client):
    seq = create(client).sequence_id
    k, v = make_kv(MODEL_F16, 8, seed=9)
    client.append(seq, k, v, zero_copy=True)  # no ids: this sequence is never indexed
    assert lookup(client, list(range(8))).tokens == 0
    seq2 = create(client).sequence_id
    r = client.reserve(seq2, 8)
    bad = error_code(lambda: client.call("commit", append_pb2.CommitRequest(
        sequence_id=seq2, reservation_id=r.reservation_id, num_tokens=8, token_ids=ids_bytes(range(7)))))
    assert bad.code == ErrorCode.INVALID_ARGUMENT and "token" in str(bad)
    client.call("commit", append_pb2.CommitRequest(
        sequence_id=seq2, reservation_id=r.reservation_id, num_tokens=8, token_ids=ids_bytes(range(8))))
    assert lookup(client, list(range(8))).tokens == 8


def test_malformed_token_ids_change_nothing(client):
    seq, k, v, ids = written(client, 8, seed=10)
    before = client.stats()
    k2, v2 = make_kv(MODEL_F16, 4, seed=11)
    for bad in (ids_bytes([1, 2, 3]), ids_bytes([1, 2, 3, 4, 5]), b"\x01\x02\x03\x04\x05"):
        req = append_pb2.AppendRequest(sequence_id=seq, keys=_tensor(k2), values=_tensor(v2), token_ids=bad)
        e = error_code(lambda: client.call("append", req))
        assert e.code == ErrorCode.INVALID_ARGUMENT, e
    e = error_code(lambda: client.call("lookup", prefix_pb2.LookupRequest(model=MODEL_F16, token_ids=b"\x00" * 6)))
    assert e.code == ErrorCode.INVALID_ARGUMENT
    e = error_code(lambda: client.call("create_sequence", sequence_pb2.CreateSequenceRequest(
        model=MODEL_F16, adopt_token_ids=b"\x00" * 7)))
    assert e.code == ErrorCode.INVALID_ARGUMENT
    assert error_code(lambda: fork(client, seq, 9)).code == ErrorCode.INVALID_ARGUMENT
    assert error_code(lambda: fork(client, seq, 2**64 - 1)).code == ErrorCode.INVALID_ARGUMENT
    after = client.stats()
    assert (after.free_pages, after.sequences, after.prefix.cached_blocks) == \
        (before.free_pages, before.sequences, before.prefix.cached_blocks)
    assert_sequence(client, seq, k, v)
    # The sequence still indexes its next blocks: the refused appends did not untrack it.
    append(client, seq, k2, v2, [8, 9, 10, 11])
    assert lookup(client, list(range(12))).tokens == 12


def test_tenants_never_share(make_daemon):
    token = "bravo-token-0123456789abcdef"
    tag = uuid.uuid4().hex[:12]

    def two(cfg):
        cfg["tenants"] = [
            {"name": "alpha", "shm": {"name": f"/kvd-test-pa-{tag}", "size_bytes": "1MiB", "staging_bytes": "256KiB"}},
            {"name": "bravo", "token": token,
             "shm": {"name": f"/kvd-test-pb-{tag}", "size_bytes": "1MiB", "staging_bytes": "256KiB"}},
        ]

    d = make_daemon(two)
    with Client(d.endpoint) as a, Client(d.endpoint, tenant="bravo", token=token) as b:
        a.hello()
        b.hello()
        written(a, 12, seed=12)
        assert lookup(a, list(range(12))).tokens == 12
        assert lookup(b, list(range(12))).tokens == 0
        assert create(b, adopt=list(range(12))).adopted_tokens == 0
        written(b, 12, seed=13)
        assert lookup(b, list(range(12))).tokens == 12
        assert b.stats().prefix.cached_blocks == 3 and a.stats().prefix.cached_blocks == 3


def test_prefix_disabled(make_daemon):
    d = make_daemon(lambda cfg: cfg.update(prefix={"enabled": False}))
    with d.client() as c:
        c.hello()
        written(c, 12, seed=14)
        assert lookup(c, list(range(12))).tokens == 0
        assert create(c, adopt=list(range(12))).adopted_tokens == 0
        assert not c.stats().prefix.enabled and c.stats().prefix.cached_blocks == 0


def test_memory_manager_drops_unused_cached_blocks_first(make_daemon):
    from memory_helpers import memory_config, wait_until

    d = make_daemon(lambda cfg: memory_config(cfg, cfg["server"]["endpoints"][0]))
    with d.client() as c:
        c.hello()
        total = c.stats().total_pages
        # Cache more blocks than the segment holds, releasing each sequence: only the index holds
        # them, and the manager must drop them (no sequence to compress or evict) to make room.
        for i in range(total * 12 // 10 // 64):
            seq, *_ = written(c, 64, seed=100 + i, ids=[i * 1000 + t for t in range(64)])
            c.release(seq)
        keep, k, v, _ = written(c, 8, seed=99, ids=list(range(900000, 900008)))
        # Usage settles at or below memory.high (0.9), give or take the last append's pages.
        wait_until(lambda: total - c.stats().free_pages <= 0.9 * total + 64, 5, "the manager to drop cached blocks")
        st = c.stats()
        assert st.prefix.evictions > 0 and st.prefix.evicted_pages > 0
        assert st.memory.evictions == 0 and st.memory.compactions == 0
        assert_sequence(c, keep, k, v)
