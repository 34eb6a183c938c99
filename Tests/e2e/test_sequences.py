"""Sequence lifetime: ids, release, limits."""

import pytest

from conftest import MAX_SEQUENCES, TINY_MODELS, assert_sequence, free_pages, make_kv
from kvd import ErrorCode, KvdError


def test_release_returns_every_page(client):
    total = client.stats().total_pages
    seqs = []
    for i, model in enumerate(TINY_MODELS):
        k, v = make_kv(model, 11, seed=i)
        s = client.create_sequence(model)
        client.append(s, k, v)
        client.query(s, mode="gather")
        seqs.append(s)
    res = client.reserve(seqs[0], 5)  # an open reservation is freed too
    assert client.stats().free_pages == total - 3 * 4 * 3 - 4 * 1
    r = client.release(seqs[0])
    assert r.pages_freed == 4 * 3 + 4 * 1
    assert r.bytes_freed == r.pages_freed * client.hello().shm.page_bytes
    for s in seqs[1:]:
        assert client.release(s).pages_freed == 12
    st = client.stats()
    assert st.free_pages == total and st.sequences == 0 and st.staging_used_bytes == 0
    with pytest.raises(KvdError) as ei:
        client.release(seqs[0])
    assert ei.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(KvdError) as ei:
        client.commit(seqs[0], res.reservation_id, 5)
    assert ei.value.code == ErrorCode.NOT_FOUND


def test_released_sequence_is_unknown_everywhere(client):
    s = client.create_sequence(TINY_MODELS[0])
    client.release(s)
    k, v = make_kv(TINY_MODELS[0], 2, seed=1)
    for call in (lambda: client.append(s, k, v), lambda: client.query(s),
                 lambda: client.reserve(s, 1), lambda: client.compact(s, sinks=1, recent=1),
                 lambda: client.release(s), lambda: client.stats(s)):
        with pytest.raises(KvdError) as ei:
            call()
        assert ei.value.code == ErrorCode.NOT_FOUND


def test_chosen_and_server_picked_ids(client):
    a = client.create_sequence(TINY_MODELS[0], sequence_id=4242, tenant="alice")
    assert a == 4242
    b = client.create_sequence(TINY_MODELS[0])
    c = client.create_sequence(TINY_MODELS[0])
    assert 0 not in (b, c) and len({a, b, c}) == 3
    st = client.stats(a)
    assert st.sequences == 3 and st.sequence.tenant == "alice" and st.sequence.generation == 1
    assert st.sequence.model == TINY_MODELS[0]


def test_duplicate_sequence_id(client, witness):
    client.create_sequence(TINY_MODELS[1], sequence_id=77)
    with pytest.raises(KvdError) as ei:
        client.create_sequence(TINY_MODELS[0], sequence_id=77)
    assert ei.value.code == ErrorCode.ALREADY_EXISTS
    with pytest.raises(KvdError) as ei:
        client.create_sequence(TINY_MODELS[0], sequence_id=witness.seq)
    assert ei.value.code == ErrorCode.ALREADY_EXISTS
    assert client.stats(77).sequence.model == TINY_MODELS[1]
    witness.check()


def test_max_sequences(client, witness):
    made = [client.create_sequence(TINY_MODELS[0]) for _ in range(MAX_SEQUENCES - 1)]
    with pytest.raises(KvdError) as ei:
        client.create_sequence(TINY_MODELS[0])
    assert ei.value.code == ErrorCode.RESOURCE_EXHAUSTED
    witness.check()
    client.release(made[0])
    client.create_sequence(TINY_MODELS[0])  # room again
