"""The Python client's typed results (kvd.results): every field carries what the daemon's reply
says (checked against ``.raw``), per-head numbers are numpy arrays, and the values agree with what
Stats reports afterwards. Attribute names of the protobuf replies keep working."""

from __future__ import annotations

import numpy as np

from conftest import MODEL_F16, TINY, make_kv
from kvd import results

L, H = TINY["layers"], TINY["kv_heads"]


def test_compact_result_matches_raw_and_stats(client):
    seq = client.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 30, seed=11)
    client.append(seq, k, v)
    free_before = client.stats().free_pages
    r = client.compact(seq, "streamingllm", sinks=2, recent=5)
    assert isinstance(r, results.CompactResult)
    raw = r.raw
    assert (r.sequence_id, r.generation, r.method, r.policy, r.chosen_by) == (
        raw.sequence_id, raw.generation, raw.method, raw.policy, raw.chosen_by)
    assert r.method == "streamingllm" and r.generation == 2
    for name, field in (("layers", "layer"), ("head_indices", "head"), ("before", "before"),
                        ("kept", "kept")):
        arr = getattr(r, name)
        assert arr.dtype == np.uint32 and arr.tolist() == [getattr(h, field) for h in raw.heads]
    assert r.before.tolist() == [30] * (L * H) and r.kept.tolist() == [7] * (L * H)
    assert r.heads == [(h.layer, h.head, h.before, h.kept) for h in raw.heads]
    assert [h.kept for h in r.heads] == [7] * (L * H), "attribute access as on HeadCount"
    assert r.budgets.tolist() == list(raw.budgets)
    assert (r.pages_freed, r.bytes_freed, r.elapsed_ns) == (raw.pages_freed, raw.bytes_freed,
                                                            raw.elapsed_ns)
    st = client.stats()
    assert st.free_pages - free_before == r.pages_freed > 0
    assert r.aliases == [] and r.alias_map == {}
    seq_st = client.stats(seq).sequence
    assert seq_st.tokens_held == int(r.kept.sum()) and seq_st.generation == r.generation
    assert seq_st.last_method == r.method

    a = client.compact(seq, "kvsharer", alias_map="1:0")
    assert a.aliases == [results.LayerAlias(1, 0)] and a.alias_map == {1: 0}
    assert [(x.layer, x.owner) for x in a.aliases] == [(x.layer, x.owner) for x in a.raw.aliases]
    assert client.stats(seq).sequence.aliased_layers == 1


def test_stats_and_sequence_lists(client):
    seq = client.create_sequence(MODEL_F16, pinned=True)
    k, v = make_kv(MODEL_F16, 9, seed=12)
    client.append(seq, k, v)
    st = client.stats(seq)
    assert isinstance(st, results.Stats) and isinstance(st.sequence, results.SequenceStats)
    raw = st.raw
    for f in ("total_pages", "free_pages", "page_bytes", "sequences", "staging_bytes",
              "staging_used_bytes", "requests", "errors"):
        assert getattr(st, f) == getattr(raw, f), f
    assert st.used_pages == raw.total_pages - raw.free_pages
    assert st.memory == raw.memory and st.prefix == raw.prefix and st.remote == raw.remote
    s = st.sequence
    assert (s.sequence_id, s.model, s.length, s.tokens_held, s.pinned) == (seq, MODEL_F16, 9,
                                                                          9 * L * H, True)
    for f in ("pages", "generation", "bytes", "reserved_tokens", "aliased_layers", "last_method"):
        assert getattr(s, f) == getattr(raw.sequence, f), f
    assert st.HasField("sequence"), "protobuf methods reach the raw reply"
    assert client.stats().sequence is None

    listed = client.list_sequences()
    assert isinstance(listed, results.SequenceList)
    mine = [x for x in listed.sequences if x.sequence_id == seq]
    assert len(mine) == 1 and isinstance(mine[0], results.SequenceStats)
    assert (mine[0].length, mine[0].tokens_held, mine[0].pages, mine[0].pinned) == (
        s.length, s.tokens_held, s.pages, True)
    pin = client.unpin(seq)
    assert isinstance(pin, results.PinResult) and pin.pinned is False
    assert client.stats(seq).sequence.pinned is False


def test_append_reserve_commit_release_results(client):
    seq = client.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 6, seed=13)
    a = client.append(seq, k[:, :, :4], v[:, :, :4])
    assert isinstance(a, results.AppendResult)
    assert (a.length, a.first_position, a.generation) == (4, 0, 1)
    assert (a.length, a.first_position) == (a.raw.length, a.raw.first_position)
    res = client.reserve(seq, 2)
    assert isinstance(res, results.ReserveResult) and res.num_tokens == 2
    assert res.first_slots.tolist() == [h.first_slot for h in res.raw.heads] == [0] * (L * H)
    assert res.layers.tolist() == [h.layer for h in res.heads]
    assert not res.aliased.any()
    assert res.page_ids(0).tolist() == np.frombuffer(res.raw.heads[0].page_ids, "<u4").tolist()
    client.arena.write_reservation(res, k[:, :, 4:], v[:, :, 4:])
    c = client.commit(seq, res.reservation_id, 2)
    assert (c.length, c.first_position) == (6, 4)
    z = client.append(seq, k[:, :, :3], v[:, :, :3], zero_copy=True)
    assert isinstance(z, results.AppendResult) and (z.length, z.first_position) == (9, 6)
    pages = client.stats(seq).sequence.pages
    rel = client.release(seq)
    assert isinstance(rel, results.ReleaseResult) and rel.pages_freed == pages
    assert rel.bytes_freed == pages * client.stats().page_bytes


def test_create_fork_lookup_results(client):
    ids = list(range(100, 112))
    k, v = make_kv(MODEL_F16, 12, seed=14)
    seq = client.create_sequence_ex(MODEL_F16)
    assert isinstance(seq, results.CreateResult) and seq.adopted_tokens == 0 and seq.generation == 1
    client.append(seq.sequence_id, k, v, token_ids=ids)
    look = client.lookup_ex(MODEL_F16, ids)
    assert isinstance(look, results.LookupResult)
    assert look.tokens == client.lookup(MODEL_F16, ids) == 12 - 12 % TINY["page_tokens"]
    assert look.page_tokens == TINY["page_tokens"] and look.pages_per_head == look.tokens // look.page_tokens
    adopted = client.create_sequence_ex(MODEL_F16, adopt_token_ids=ids)
    assert adopted.adopted_tokens == look.tokens
    f = client.fork_ex(seq.sequence_id, 7)
    assert isinstance(f, results.ForkResult) and f.length == 7
    assert client.stats(f.sequence_id).sequence.length == 7
