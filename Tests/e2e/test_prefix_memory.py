"""Prefix reuse under memory pressure: the manager counts shared pages right. Evicting or
compressing a sequence whose pages the prefix index also holds gives memory back only once the
blocks go, so each action is followed by dropping the blocks it left unused (no over-eviction);
a compaction that would free nothing net (a fork shares its pages) is skipped; a Fork that needs
fresh pages waits for a reclaim like an Append instead of failing at once.

Tiny f16 model: 4 (layer, head) pairs, 4 tokens per page, so 64 tokens are 64 pages.
"""
from __future__ import annotations

import time

from conftest import ErrorCode, assert_sequence
from memory_helpers import HEADS, error_code, filled, memory_config, pin, wait_until
from test_prefix import fork, written


def daemon(make_daemon, **memory):
    return make_daemon(lambda cfg: memory_config(cfg, cfg["server"]["endpoints"][0], **memory))


def used(s) -> int:
    return s.total_pages - s.free_pages


def test_evicting_indexed_sequences_stops_at_low(make_daemon):
    # Eviction only. Every sequence is indexed (appended with its own token ids), so each eviction
    # leaves its pages with the index: they must be dropped at once, or the pass would think it
    # freed nothing and go on evicting every idle sequence.
    d = daemon(make_daemon, compress_policy="", high=0.9, low=0.8)
    with d.client() as c:
        total = c.stats().total_pages
        made = []
        while used(c.stats()) + 64 <= 0.86 * total:
            made.append(written(c, 64, seed=len(made), ids=[len(made) * 1000 + t for t in range(64)])[0])
        assert c.stats().prefix.cached_pages == 64 * len(made)
        time.sleep(0.4)  # past memory.busy_ms
        # Over memory.high with one more batch of indexed sequences, appended and left alone (a
        # fixed number: the manager starts as soon as the first crosses high).
        for _ in range(int(0.9 * total - used(c.stats())) // 64 + 2):
            made.append(written(c, 64, seed=len(made), ids=[len(made) * 1000 + t for t in range(64)])[0])
        peak = 64 * len(made)  # pages ever taken; the manager may be at work already
        s = wait_until(lambda: (lambda s: s if used(s) <= 0.8 * total and s.memory.last_reclaim_reached_low else None)(c.stats()),
                       5.0, "usage under memory.low")
        needed = -(-(peak - int(0.8 * total)) // 64)  # whole 64-page sequences
        assert s.memory.evictions >= needed
        assert s.memory.evictions <= needed + 1, f"evicted {s.memory.evictions} sequences, {needed} were enough"
        assert s.sequences == len(made) - s.memory.evictions
        # The evictions' own count includes the pages their blocks gave back, and usage stops just
        # under low (less than a sequence below).
        assert s.memory.evictions_pages == peak - used(s)
        assert used(s) > 0.8 * total - 64
        # Every page came back by dropping blocks; the last eviction's blocks that were not needed
        # stay as cache.
        assert s.prefix.evicted_pages == s.memory.evictions_pages
        assert s.prefix.unused_pages == 64 * s.memory.evictions - s.memory.evictions_pages


def test_a_fork_sharing_every_page_is_not_compressed(make_daemon):
    d = daemon(make_daemon, evict=False)
    with d.client() as c:
        total = c.stats().total_pages
        source, k, v, _ = written(c, 64, seed=1)
        pin(c, source)
        twin = fork(c, source, 64).sequence_id  # page-aligned: shares all 64 pages, copies none
        time.sleep(0.4)
        # Idle sequences above memory.high: the manager compresses them, the twin first in LRU
        # order — but compacting it would copy its kept tokens and free nothing.
        others = []
        while used(c.stats()) + 64 <= 0.95 * total:
            others.append(filled(c, 64, seed=10 + len(others))[0])
        s = wait_until(lambda: (lambda s: s if used(s) <= 0.8 * total and s.memory.last_reclaim_reached_low else None)(c.stats()),
                       5.0, "usage under memory.low")
        assert s.memory.compactions >= 1 and s.memory.evictions == 0
        st = c.stats(twin).sequence
        assert st.manager_compactions == 0 and st.generation == 1 and st.tokens_held == 64 * HEADS
        assert_sequence(c, twin, k, v)
        assert_sequence(c, source, k, v)


def test_fork_waits_for_the_manager_to_make_room(make_daemon):
    # high = 1: no background pass; only the fork's own need for room triggers one.
    d = daemon(make_daemon, compress_policy="", high=1.0, low=0.99)
    with d.client() as c:
        source, k, v, _ = written(c, 66, seed=1)  # 16 full pages and 2 tokens per head
        idle = []
        while c.stats().free_pages >= 64 + HEADS:
            idle.append(filled(c, 64, seed=10 + len(idle))[0])
        while c.stats().free_pages >= HEADS:  # one token takes a page per head
            idle.append(filled(c, 1, seed=10 + len(idle))[0])
        time.sleep(0.4)  # past memory.busy_ms
        before = c.stats()
        assert before.free_pages < HEADS  # the fork's partial page cannot be copied as things are
        twin = fork(c, source, 66).sequence_id
        after = c.stats()
        assert after.memory.synchronous_reclaims >= 1 and after.memory.evictions == 1
        assert error_code(lambda: c.stats(idle[0])).code == ErrorCode.EVICTED  # least recently used
        assert_sequence(c, twin, k, v)
        assert_sequence(c, source, k, v)
