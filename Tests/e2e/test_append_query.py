"""Appends (inline and zero-copy) read back bit-exact in every dtype and query mode."""

import zlib

import numpy as np
import pytest

from conftest import (MODEL_WIDE, TINY, TINY_MODELS, assert_bits_equal, assert_sequence, bits,
                      free_pages, make_kv)

SPLITS = (5, 1, 7)  # with page_tokens 4: fills and crosses page boundaries at odd offsets


def _append_in_parts(c, seq, k, v, zero_copy, splits=SPLITS):
    t = 0
    for n in splits:
        r = c.append(seq, k[:, :, t:t + n], v[:, :, t:t + n], zero_copy=zero_copy)
        assert r.first_position == t, "token i of an append gets position length + i"
        t += n
        assert r.length == t
        assert r.generation == 1, "appending moves no tokens: generation stays 1"
    return t


@pytest.mark.parametrize("zero_copy", [False, True], ids=["inline", "zerocopy"])
@pytest.mark.parametrize("model", TINY_MODELS)
def test_roundtrip_all_modes(client, model, zero_copy):
    T = sum(SPLITS)
    k, v = make_kv(model, T, seed=zlib.crc32(f"{model}{zero_copy}".encode()))
    seq = client.create_sequence(model)
    _append_in_parts(client, seq, k, v, zero_copy)
    assert_sequence(client, seq, k, v)
    meta = client.query(seq, mode="metadata")
    assert meta.length == T and meta.generation == 1
    for h in meta:
        assert h.num_tokens == T and h.keys is None
        assert h.positions.tolist() == list(range(T))
    st = client.stats(seq).sequence
    assert (st.length, st.tokens_held, st.reserved_tokens, st.model) == (T, 4 * T, 0, model)
    # every head holds ceil(13 / 4) = 4 pages
    assert st.pages == TINY["layers"] * TINY["kv_heads"] * -(-T // TINY["page_tokens"])


@pytest.mark.parametrize("model", TINY_MODELS)
def test_inline_and_zero_copy_store_identical_bytes(client, model):
    T = sum(SPLITS)
    k, v = make_kv(model, T, seed=7)
    a, b = client.create_sequence(model), client.create_sequence(model)
    _append_in_parts(client, a, k, v, zero_copy=False)
    _append_in_parts(client, b, k, v, zero_copy=True)
    for mode in ("pages", "inline", "gather"):
        qa, qb = client.query(a, mode=mode, copy=True), client.query(b, mode=mode, copy=True)
        for ha, hb in zip(qa, qb):
            assert ha.keys.tobytes() == hb.keys.tobytes()
            assert ha.values.tobytes() == hb.values.tobytes()
            assert ha.positions.tobytes() == hb.positions.tobytes()
            assert ha.log_weights.tobytes() == hb.log_weights.tobytes()


def test_mixed_inline_and_zero_copy_appends(client):
    model = TINY_MODELS[1]
    k, v = make_kv(model, 13, seed=11)
    seq = client.create_sequence(model)
    client.append(seq, k[:, :, :3], v[:, :, :3])
    client.append(seq, k[:, :, 3:9], v[:, :, 3:9], zero_copy=True)
    client.append(seq, k[:, :, 9:], v[:, :, 9:])
    assert_sequence(client, seq, k, v)


def test_pages_mode_gives_zero_copy_views_in_page_order(client):
    model = TINY_MODELS[0]
    k, v = make_kv(model, 13, seed=5)
    seq = client.create_sequence(model)
    client.append(seq, k, v)
    q = client.query(seq, mode="pages")
    arena = client.arena.buffer
    info = client.hello().shm
    for h in q:
        assert [len(p) for p in h.key_pages] == [4, 4, 4, 1]
        for i, (kp, vp) in enumerate(zip(h.key_pages, h.value_pages)):
            # a page view is really memory of the mapped segment, not a copy
            assert np.shares_memory(kp, np.frombuffer(arena, np.uint8))
            assert not kp.flags.writeable
            assert_bits_equal(kp, k[h.layer, h.head, 4 * i:4 * i + len(kp)])
            assert_bits_equal(vp, v[h.layer, h.head, 4 * i:4 * i + len(vp)])
        # K block then V block inside one page: value offset = key offset + P * d * size
        kaddr = kp.__array_interface__["data"][0]
        vaddr = vp.__array_interface__["data"][0]
        assert vaddr - kaddr == 4 * 8 * 2
    one = client.create_sequence(model)
    client.append(one, k[:, :, :3], v[:, :, :3])
    h = client.query(one)[1, 1]
    assert h.is_view and np.shares_memory(h.keys, np.frombuffer(arena, np.uint8))
    assert info.page_count > 0


def test_gather_views_are_contiguous_in_staging(client):
    model = TINY_MODELS[2]
    k, v = make_kv(model, 13, seed=9)
    seq = client.create_sequence(model)
    client.append(seq, k, v)
    info = client.hello().shm
    q = client.query(seq, mode="gather")
    lo, hi = info.staging_offset, info.staging_offset + info.staging_bytes
    base = np.frombuffer(client.arena.buffer, np.uint8).__array_interface__["data"][0]
    for h in q:
        assert h.is_view and h.keys.flags.c_contiguous
        off = h.keys.__array_interface__["data"][0] - base
        assert lo <= off and off + h.keys.nbytes <= hi, "gathered keys lie in the staging area"
        assert_bits_equal(h.keys, k[h.layer, h.head])
    st = client.stats(seq)
    assert st.staging_used_bytes >= 2 * k.nbytes and st.sequence.staging_bytes >= 2 * k.nbytes
    client.release(seq)
    assert client.stats().staging_used_bytes == 0, "Release frees the staging buffer"


def test_query_selected_layers(client):
    model = TINY_MODELS[0]
    k, v = make_kv(model, 6, seed=2)
    seq = client.create_sequence(model)
    client.append(seq, k, v)
    for mode in ("pages", "inline", "gather", "metadata"):
        q = client.query(seq, layers=[1], mode=mode)
        assert [(h.layer, h.head) for h in q] == [(1, 0), (1, 1)], mode
        if mode != "metadata":
            K, V = q.stacked()
            assert_bits_equal(K, k[1:2]) and assert_bits_equal(V, v[1:2])


def test_stacked_and_empty_sequence(client):
    model = TINY_MODELS[1]
    seq = client.create_sequence(model)
    q = client.query(seq)
    assert q.length == 0 and q.generation == 1 and len(q) == 4
    assert all(h.num_tokens == 0 and h.keys.shape == (0, 8) for h in q)
    k, v = make_kv(model, 9, seed=4)
    client.append(seq, k, v)
    K, V = client.query(seq, mode="pages").stacked()
    assert_bits_equal(K, k) and assert_bits_equal(V, v)


def test_wide_model_fills_whole_pages(client):
    k, v = make_kv(MODEL_WIDE, 20, seed=8)
    seq = client.create_sequence(MODEL_WIDE)
    before = free_pages(client)
    client.append(seq, k[:, :, :9], v[:, :, :9], zero_copy=True)
    client.append(seq, k[:, :, 9:], v[:, :, 9:])
    assert before - free_pages(client) == 3  # ceil(20 / 8)
    assert_sequence(client, seq, k, v)


def test_zero_copy_partial_commit_and_abort(client):
    model = TINY_MODELS[0]
    k, v = make_kv(model, 8, seed=12)
    seq = client.create_sequence(model)
    total = free_pages(client)
    res = client.reserve(seq, 8, slots=True)
    assert res.num_tokens == 8 and res.reservation_id != 0 and len(res.heads) == 4
    assert [(h.layer, h.head) for h in res.heads] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for h in res.heads:
        assert sum(s.count for s in h.slots) == 8
        # The verbose runs say what page_ids + first_slot say.
        ids = np.frombuffer(h.page_ids, "<u4")
        assert [s.page for s in h.slots] == list(ids) and h.slots[0].key_offset > 0
    assert total - free_pages(client) == 8, "Reserve allocates every page at once"
    st = client.stats(seq).sequence
    assert (st.reserved_tokens, st.pages, st.length) == (8, 8, 0)
    client.arena.write_reservation(res, k, v)
    c = client.commit(seq, res.reservation_id, 3)
    assert (c.length, c.first_position) == (3, 0)
    assert total - free_pages(client) == 4, "the unused reserved page of each head is freed"
    assert_sequence(client, seq, k[:, :, :3], v[:, :, :3])

    res = client.reserve(seq, 6)
    client.commit(seq, res.reservation_id, abort=True)
    assert total - free_pages(client) == 4
    st = client.stats(seq).sequence
    assert (st.reserved_tokens, st.length) == (0, 3)
    assert_sequence(client, seq, k[:, :, :3], v[:, :, :3])
    client.append(seq, k[:, :, 3:], v[:, :, 3:], zero_copy=True)
    assert_sequence(client, seq, k, v)


def test_zero_copy_write_failure_aborts_reservation(client):
    model = TINY_MODELS[0]
    seq = client.create_sequence(model)
    k, v = make_kv(model, 5, seed=1)
    total = free_pages(client)

    class Boom(Exception):
        pass

    real = client.arena.write_reservation

    def failing(*a, **kw):
        raise Boom()

    client.arena.write_reservation = failing
    try:
        with pytest.raises(Boom):
            client.append(seq, k, v, zero_copy=True)
    finally:
        client.arena.write_reservation = real
    st = client.stats(seq).sequence
    assert (st.reserved_tokens, st.length, st.pages) == (0, 0, 0)
    assert free_pages(client) == total
    client.append(seq, k, v, zero_copy=True)  # no reservation left open
    assert_sequence(client, seq, k, v)


def test_copy_true_survives_release(client):
    model = TINY_MODELS[2]
    k, v = make_kv(model, 6, seed=21)
    seq = client.create_sequence(model)
    client.append(seq, k, v)
    q = client.query(seq, mode="gather", copy=True)
    client.release(seq)
    other = client.create_sequence(model)
    k2, v2 = make_kv(model, 6, seed=22)
    client.append(other, k2, v2)
    client.query(other, mode="gather")  # may reuse the same staging/page bytes
    for h in q:
        assert_bits_equal(h.keys, k[h.layer, h.head]) and assert_bits_equal(h.values, v[h.layer, h.head])


def test_fresh_client_maps_arena_on_demand(kvd, client):
    from kvd import Client, ErrorCode, KvdError
    model = TINY_MODELS[0]
    seq = client.create_sequence(model)
    k, v = make_kv(model, 6, seed=31)
    with Client(kvd.endpoint) as c:  # no explicit hello()
        c.append(seq, k, v, zero_copy=True)
        assert_sequence(c, seq, k, v)
    with Client(kvd.endpoint) as c:
        other = c.create_sequence(model)
        with pytest.raises(KvdError) as ei:  # checked locally: zero-copy bytes never reach kvd
            c.append(other, k[:, :, :, :4], v[:, :, :, :4], zero_copy=True)
        assert ei.value.code == ErrorCode.INVALID_ARGUMENT
        assert c.stats(other).sequence.reserved_tokens == 0


def test_verbose_runs_are_opt_in_and_agree_with_page_ids(client):
    """PageRef runs (Query) and Slot runs (Reserve) are sent only when asked; page_ids always."""
    from kvd.v1 import append_pb2, query_pb2
    model = TINY_MODELS[0]
    k, v = make_kv(model, 13, seed=21)
    seq = client.create_sequence(model)
    client.append(seq, k, v)
    plain = client.call("query", query_pb2.QueryRequest(sequence_id=seq, mode=query_pb2.QUERY_MODE_PAGES))
    verbose = client.call("query", query_pb2.QueryRequest(sequence_id=seq, mode=query_pb2.QUERY_MODE_PAGES,
                                                          page_refs=True))
    for a, b in zip(plain.heads, verbose.heads):
        assert len(a.pages) == 0 and a.page_ids == b.page_ids
        assert [r.page for r in b.pages] == list(np.frombuffer(b.page_ids, "<u4"))
        assert [r.count for r in b.pages] == [4, 4, 4, 1]
    res = client.call("reserve", append_pb2.ReserveRequest(sequence_id=seq, num_tokens=2))
    assert all(len(h.slots) == 0 and len(h.page_ids) > 0 for h in res.heads)
    client.commit(seq, res.reservation_id, abort=True)
