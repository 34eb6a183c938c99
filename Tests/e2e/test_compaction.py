"""StreamingLLM compaction keeps exactly the sinks and the recent window, and frees pages."""

import numpy as np
import pytest

from conftest import (TINY, TINY_MODELS, assert_sequence, free_pages, make_kv)

P = TINY["page_tokens"]
HEADS = TINY["layers"] * TINY["kv_heads"]


def pages_for(n: int) -> int:
    return -(-n // P)


def streaming_keep(n: int, sinks: int, recent: int) -> np.ndarray:
    """NumPy expectation: indices a StreamingLLM plan keeps out of n tokens."""
    if n <= sinks + recent:
        return np.arange(n)
    return np.concatenate([np.arange(sinks), np.arange(n - recent, n)])


@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("sinks, recent", [(2, 3), (0, 5), (4, 0), (1, 8)])
def test_streamingllm_keeps_sinks_and_recent(client, model, sinks, recent):
    T = 23
    k, v = make_kv(model, T, seed=sinks * 100 + recent)
    seq = client.create_sequence(model)
    client.append(seq, k[:, :, :10], v[:, :, :10])
    client.append(seq, k[:, :, 10:], v[:, :, 10:], zero_copy=True)
    free_before = free_pages(client)
    r = client.compact(seq, "streamingllm", sinks=sinks, recent=recent)

    keep = streaming_keep(T, sinks, recent)
    want_freed = HEADS * (pages_for(T) - pages_for(len(keep)))
    assert r.method == "streamingllm" and r.sequence_id == seq
    assert r.generation == 2, "compaction that moves tokens bumps the generation"
    assert [(h.layer, h.head, h.before, h.kept) for h in r.heads] == [
        (l, h, T, len(keep)) for l in range(2) for h in range(2)]
    assert r.pages_freed == want_freed
    assert r.bytes_freed == want_freed * client.hello().shm.page_bytes
    assert free_pages(client) - free_before == want_freed
    st = client.stats(seq).sequence
    assert (st.length, st.generation, st.pages, st.tokens_held) == (
        T, 2, HEADS * pages_for(len(keep)), HEADS * len(keep))

    assert_sequence(client, seq, k[:, :, keep], v[:, :, keep], positions=keep)
    assert client.query(seq).generation == 2 and client.query(seq).length == T

    # a later append continues at position = length, behind the kept tokens
    k2, v2 = make_kv(model, 6, seed=99)
    r2 = client.append(seq, k2, v2)
    assert (r2.first_position, r2.length) == (T, T + 6)
    assert_sequence(client, seq, np.concatenate([k[:, :, keep], k2], axis=2),
                    np.concatenate([v[:, :, keep], v2], axis=2),
                    positions=np.concatenate([keep, np.arange(T, T + 6)]))


def test_compact_twice_and_default_method(client):
    model = TINY_MODELS[0]
    k, v = make_kv(model, 30, seed=5)
    seq = client.create_sequence(model)
    client.append(seq, k, v)
    r = client.compact(seq, sinks=2, recent=10)  # empty method: the model's default
    assert r.method == "streamingllm" and r.generation == 2
    keep1 = streaming_keep(30, 2, 10)
    r = client.compact(seq, "streamingllm", sinks=1, recent=3)
    assert r.generation == 3
    assert [h.before for h in r.heads] == [12] * 4 and [h.kept for h in r.heads] == [4] * 4
    keep2 = keep1[streaming_keep(12, 1, 3)]
    assert keep2.tolist() == [0, 27, 28, 29]
    assert_sequence(client, seq, k[:, :, keep2], v[:, :, keep2], positions=keep2)


@pytest.mark.parametrize("sinks, recent", [(4, 64), (10, 3), (0, 13), (13, 0)])
def test_compact_keeping_everything_changes_nothing(client, sinks, recent):
    model = TINY_MODELS[1]
    k, v = make_kv(model, 13, seed=3)
    seq = client.create_sequence(model)
    client.append(seq, k, v)
    before = free_pages(client)
    r = client.compact(seq, "streamingllm", sinks=sinks, recent=recent)
    assert [h.kept for h in r.heads] == [13] * 4
    assert r.pages_freed == 0 and r.bytes_freed == 0 and free_pages(client) == before
    assert r.generation == 1, "nothing moved, so the generation is not bumped"
    assert_sequence(client, seq, k, v)


def test_compact_default_params(client):
    # defaults sinks=4, recent=64: 70 tokens -> keep 0..3 and 6..69
    model = TINY_MODELS[2]
    k, v = make_kv(model, 70, seed=6)
    seq = client.create_sequence(model)
    client.append(seq, k[:, :, :35], v[:, :, :35])
    client.append(seq, k[:, :, 35:], v[:, :, 35:])
    r = client.compact(seq)
    keep = streaming_keep(70, 4, 64)
    assert [h.kept for h in r.heads] == [68] * 4
    assert r.pages_freed == HEADS * (pages_for(70) - pages_for(68))
    assert_sequence(client, seq, k[:, :, keep], v[:, :, keep], positions=keep)


def test_page_refs_follow_generation(client):
    model = TINY_MODELS[0]
    k, v = make_kv(model, 16, seed=1)
    seq = client.create_sequence(model)
    client.append(seq, k, v)
    q1 = client.query(seq, copy=True)
    client.compact(seq, "streamingllm", sinks=1, recent=2)
    q2 = client.query(seq)
    assert (q1.generation, q2.generation) == (1, 2)
    for h in q2:
        assert [len(p) for p in h.key_pages] == [3]  # packed to the front of the first page
