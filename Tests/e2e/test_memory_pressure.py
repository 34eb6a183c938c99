"""Pressure: above memory.high the manager compresses idle sequences (least recently used first)
before it evicts any, never touches pinned or busy ones, and an Append only fails when everything
left is pinned or busy."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from conftest import MODEL_F16, ErrorCode, KvdError, assert_bits_equal, make_kv
from memory_helpers import (HEADS, EventLog, create, error_code, filled, keep_alive, memory_config,
                            pin, read_back, wait_until)
from kvd.v1 import memory_pb2

EV = memory_pb2.Event


def pressured(make_daemon, **memory):
    def mutate(cfg):
        memory_config(cfg, cfg["server"]["endpoints"][0], **memory)
    return make_daemon(mutate)


def fill_idle(client, fraction: float, tokens: int = 64, start_seed: int = 1000) -> list:
    """Idle sequences of `tokens` tokens until `fraction` of the pages are in use."""
    s = client.stats()
    per = HEADS * tokens // 4
    made = []
    while (s.total_pages - s.free_pages) + per <= fraction * s.total_pages:
        made.append(filled(client, tokens, seed=start_seed + len(made))[0])
        s = client.stats()
    return made


def test_idle_sequences_are_compressed_before_any_is_evicted(make_daemon):
    d = pressured(make_daemon)
    log = EventLog(d.config["memory"]["events_endpoint"])
    c = d.client()
    total = c.stats().total_pages
    pinned, pk, pv = filled(c, 64, seed=1, pinned=True)
    busy, bk, bv = filled(c, 32, seed=2)
    reservation = c.reserve(busy, 8)  # an open reservation: the manager must leave it alone
    idle = fill_idle(c, 0.85)
    assert len(idle) >= 10
    time.sleep(0.4)  # past memory.busy_ms: the filled sequences are idle now

    # A live client appends far more than is free.
    live = create(c)
    free = c.stats().free_pages
    step = 32
    want_pages = int(total * 0.85)  # more than compressing every idle sequence gives back
    appended = 0
    k, v = make_kv(MODEL_F16, step, seed=7)
    while appended * HEADS // 4 < want_pages:
        c.append(live, k, v, zero_copy=(appended // step) % 2 == 1)  # Append and Reserve/Commit
        appended += step
    assert appended * HEADS // 4 > 1.5 * free
    # Usage is still above low: once idle, the live sequence would be next in line. Pin it while
    # it is still busy, so the events read below are all about the other sequences.
    pin(c, live)

    events = log.drain(1.0)
    kinds = [e.kind for e in events]
    assert EV.KIND_COMPACTED in kinds and EV.KIND_EVICTED in kinds
    first_evicted = kinds.index(EV.KIND_EVICTED)
    compacted_first = {e.sequence_id for e in events[:first_evicted] if e.kind == EV.KIND_COMPACTED}
    assert compacted_first == set(idle), "every idle sequence is compressed before the first eviction"
    # Least recently used first: the idle sequences were filled in order.
    order = [e.sequence_id for e in events[:first_evicted] if e.kind == EV.KIND_COMPACTED]
    assert order == idle
    for e in events:
        assert e.sequence_id not in (pinned, busy, live)
        if e.kind == EV.KIND_COMPACTED:
            assert e.method.startswith("pressure") and e.tokens_after < e.tokens_before
            assert e.tokens_after >= HEADS * 8  # memory.floor_tokens per head
    evicted = [e.sequence_id for e in events if e.kind == EV.KIND_EVICTED]

    # Pinned and busy sequences are bit-exact; the reservation still commits.
    for seq, kk, vv in ((pinned, pk, pv), (busy, bk, bv)):
        gk, gv = read_back(c, seq)
        assert_bits_equal(gk, kk, f"sequence {seq} keys")
        assert_bits_equal(gv, vv, f"sequence {seq} values")
    c.commit(busy, reservation.reservation_id, 8)
    assert c.stats(live).sequence.length == appended

    # What the manager did shows in Stats and in what clients see.
    m = c.stats().memory
    assert m.compactions == len(idle) and m.evictions == len(evicted) and m.compactions_pages > 0
    assert m.events_published >= len(events)
    err = error_code(lambda: c.stats(evicted[0]))
    assert err.code == ErrorCode.EVICTED and "evicted by the memory manager" in err.message
    survivors = [s for s in idle if s not in evicted]
    for s in survivors:
        st = c.stats(s).sequence
        assert st.manager_compactions == 1 and st.generation == 2 and st.length == 64
        assert st.tokens_held == HEADS * 16  # 4 sinks + 12 recent per head
    log.close()
    c.close()


def test_compression_alone_suffices_when_it_frees_enough(make_daemon):
    d = pressured(make_daemon)
    c = d.client()
    idle = fill_idle(c, 0.85)
    time.sleep(0.4)
    live = create(c)
    k, v = make_kv(MODEL_F16, 64, seed=3)
    for _ in range(10):  # crosses memory.high; compressing a few idle sequences is enough
        c.append(live, k, v)
    # Appends after the pass that reached low may leave usage anywhere under high.
    s = wait_until(lambda: (lambda s: s if s.memory.compactions > 0 and s.memory.last_reclaim_reached_low
                            and s.total_pages - s.free_pages <= 0.9 * s.total_pages else None)(c.stats()),
                   5.0, "a reclaim to memory.low")
    assert s.memory.compactions > 0 and s.memory.evictions == 0 and s.sequences == len(idle) + 1
    c.close()


def test_background_manager_brings_usage_under_low_quickly(make_daemon):
    d = pressured(make_daemon, evict=False)
    c = d.client()
    idle = fill_idle(c, 0.95)  # above high at once; nothing appends afterwards
    s = c.stats()
    assert s.total_pages - s.free_pages > 0.9 * s.total_pages
    # The pass records reaching low just after it stops: wait for that, not only for the usage.
    m = wait_until(lambda: (lambda s: s.memory if s.total_pages - s.free_pages <= 0.8 * s.total_pages
                            and s.memory.last_reclaim_reached_low and s.memory.last_reclaim_us > 0 else None)(c.stats()),
                   5.0, "usage under memory.low")
    assert m.evictions == 0 and m.compactions >= 1 and m.last_reclaim_reached_low
    assert m.last_reclaim_us < 2_000_000
    assert c.stats().sequences == len(idle)
    c.close()


def test_only_pinned_or_busy_memory_left_gives_resource_exhausted(make_daemon):
    d = pressured(make_daemon)
    c = d.client()
    pinned = []
    s = c.stats()
    while (s.total_pages - s.free_pages) + HEADS * 16 <= 0.97 * s.total_pages:
        pinned.append(filled(c, 64, seed=len(pinned), pinned=True))
        s = c.stats()
    time.sleep(0.4)
    live = create(c)
    k, v = make_kv(MODEL_F16, 64, seed=9)
    err = None
    for _ in range(100):
        try:
            c.append(live, k, v)
        except KvdError as e:
            err = e
            break
    assert err is not None and err.code == ErrorCode.RESOURCE_EXHAUSTED
    assert "pinned, busy or below memory.floor_tokens" in err.message
    m = c.stats().memory
    assert m.compactions == 0 and m.evictions == 0
    for seq, kk, vv in pinned[:3] + pinned[-3:]:
        gk, gv = read_back(c, seq)
        assert_bits_equal(gk, kk, "pinned keys")
        assert_bits_equal(gv, vv, "pinned values")
    # Unpinning makes the memory reclaimable: an append now succeeds (on a new sequence: the one
    # that failed is now the least recently used, so it goes first).
    for seq, _, _ in pinned:
        pin(c, seq, False)
    time.sleep(0.4)
    c.append(create(c), k, v)
    c.close()


def test_pinned_page_quota(make_daemon):
    def mutate(cfg):
        memory_config(cfg, cfg["server"]["endpoints"][0])
        cfg["tenants"] = [{"name": "default", "shm": {"name": cfg["arena"]["shm_name"]},
                           "quotas": {"pinned_pages": HEADS * 16}}]
    d = make_daemon(mutate)
    c = d.client()
    assert c.hello().limits.quota_pinned_pages == HEADS * 16
    a, _, _ = filled(c, 64, seed=1)          # 64 pages
    b, _, _ = filled(c, 8, seed=2)           # 8 pages
    assert pin(c, a).pinned_pages == HEADS * 16
    err = error_code(lambda: pin(c, b))
    assert err.code == ErrorCode.RESOURCE_EXHAUSTED and "quotas.pinned_pages" in err.message
    assert not c.stats(b).sequence.pinned
    # A pinned sequence cannot grow past the quota either; unpinned ones can.
    k, v = make_kv(MODEL_F16, 4, seed=3)
    assert error_code(lambda: c.append(a, k, v)).code == ErrorCode.RESOURCE_EXHAUSTED
    c.append(b, k, v)
    assert pin(c, a, False).pinned_pages == 0
    assert pin(c, b).pinned and c.stats().memory.pinned_pages == HEADS * 3
    c.close()


def test_sighup_reloads_the_watermarks(make_daemon):
    d = pressured(make_daemon, high=0.99, low=0.98)
    c = d.client()
    fill_idle(c, 0.95)
    time.sleep(0.5)
    s = c.stats()
    assert s.total_pages - s.free_pages > 0.9 * s.total_pages and s.memory.compactions == 0
    text = d.config_path.read_text().replace("high: 0.99", "high: 0.9").replace("low: 0.98", "low: 0.8")
    d.config_path.write_text(text)
    d.proc.send_signal(signal.SIGHUP)
    s = wait_until(lambda: (lambda s: s if s.total_pages - s.free_pages <= 0.8 * s.total_pages else None)(c.stats()),
                   3.0, "reclaim after SIGHUP")
    assert s.memory.high == pytest.approx(0.9) and s.memory.low == pytest.approx(0.8)
    assert s.memory.compactions >= 1
    c.close()


def test_query_based_pressure_policy_uses_the_queries_a_sequence_kept(make_daemon):
    def mutate(cfg):
        memory_config(cfg, cfg["server"]["endpoints"][0], compress_policy="queried", evict=False)
        cfg["policies"]["queried"] = {"method": "snapkv", "params": {"budget": 8, "window": 4}}
    d = make_daemon(mutate)
    log = EventLog(d.config["memory"]["events_endpoint"])
    c = d.client()
    with_queries, _, _ = filled(c, 64, seed=1)
    q = np.random.default_rng(0).standard_normal((2, 4, 4, 8)).astype(np.float16)
    c.compact(with_queries, "streamingllm", queries=q, sinks=60, recent=4)  # keeps all 64
    idle = fill_idle(c, 0.95)
    events = [e for e in log.drain(3.0) if e.kind == EV.KIND_COMPACTED]
    methods = {e.sequence_id: e.method for e in events}
    assert methods[with_queries] == "queried (snapkv)"
    assert all(methods[s] == "pressure (streamingllm)" for s in idle if s in methods)
    log.close()
    c.close()


def test_an_append_right_after_a_fast_fill_compresses_recently_used_sequences(make_daemon):
    # Every filled sequence is "recent" (memory.busy_ms 5 s): the background manager leaves them
    # alone, but an append that needs room compresses them (compressing is enough here).
    d = pressured(make_daemon, busy_ms=5000)
    c = d.client()
    filled_seqs = fill_idle(c, 0.95)
    live = create(c)
    k, v = make_kv(MODEL_F16, 64, seed=11)
    for _ in range(int(0.3 * c.stats().total_pages) // (HEADS * 16)):
        c.append(live, k, v)
    m = c.stats().memory
    assert m.synchronous_reclaims >= 1 and m.compactions >= 1 and m.evictions == 0
    assert c.stats().sequences == len(filled_seqs) + 1
    c.close()


def test_an_append_that_needs_room_evicts_recently_used_sequences_last(make_daemon):
    # No compression; everything filled is recent. The append still succeeds: the least recently
    # used recent sequences are evicted, the newest survive.
    d = pressured(make_daemon, busy_ms=5000, compress_policy="")
    c = d.client()
    filled_seqs = fill_idle(c, 0.95)
    live = create(c)
    k, v = make_kv(MODEL_F16, 64, seed=12)
    for _ in range(int(0.2 * c.stats().total_pages) // (HEADS * 16)):
        c.append(live, k, v)
    m = c.stats().memory
    assert m.compactions == 0 and m.evictions >= 1
    gone = [s for s in filled_seqs if error_code_or_none(lambda: c.stats(s)) == ErrorCode.EVICTED]
    assert len(gone) == m.evictions and gone == filled_seqs[:len(gone)], "oldest first"
    c.close()


def error_code_or_none(fn):
    try:
        fn()
    except KvdError as e:
        return e.code
    return None
