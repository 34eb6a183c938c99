"""A fork / adopt / release storm from 8 clients at once against one daemon. Every client writes
the same three shared prompts (same token ids, same K/V), so sequences adopt each other's cached
blocks; each also forks, appends private tokens on both sides, sometimes compacts a fork (copy-on-
write), and releases in random order. Every sequence is checked bit-exact when written, forked and
before release. At the end nothing is held: cached pages are the index's alone, and one sequence
can then take the whole segment, which needs every page back (any leaked reference count would
leave some page out), and releasing it leaves every page free.
"""
from __future__ import annotations

import random
import threading

import numpy as np

from conftest import MODEL_F16, TINY, assert_sequence, make_kv
from memory_helpers import memory_config

P = TINY["page_tokens"]
HEADS = TINY["layers"] * TINY["kv_heads"]
CLIENTS = 8
ROUNDS = 60
PROMPT = 30  # tokens: 7 full pages and 2 tokens
PROMPTS = [(list(range(p * 10_000, p * 10_000 + PROMPT)), *make_kv(MODEL_F16, PROMPT, seed=500 + p)) for p in range(3)]


def storm(d, worker: int, failures: list) -> None:
    rng = random.Random(worker)
    next_id = 1_000_000 * (worker + 1)  # private token ids: nobody else's blocks match them
    live = []  # (sequence, keys, values) each holds exactly
    try:
        with d.client() as c:
            for _ in range(ROUNDS):
                ids, pk, pv = PROMPTS[rng.randrange(len(PROMPTS))]
                n = rng.randint(1, 9)
                own = list(range(next_id, next_id + n))
                next_id += n
                sk, sv = make_kv(MODEL_F16, n, seed=rng.randrange(1 << 30))
                r = c.create_sequence_ex(MODEL_F16, adopt_token_ids=ids + own)
                a = r.adopted_tokens
                assert a % P == 0 and a <= PROMPT
                seq = r.sequence_id
                if a < PROMPT:
                    c.append(seq, pk[:, :, a:], pv[:, :, a:], token_ids=ids[a:])
                c.append(seq, sk, sv, token_ids=own, zero_copy=rng.random() < 0.5)
                k, v = np.concatenate([pk, sk], axis=2), np.concatenate([pv, sv], axis=2)
                assert_sequence(c, seq, k, v, modes=("pages",))
                live.append((seq, k, v))

                # Fork a random live, never-compacted sequence at a random length, then diverge.
                src, sk_, sv_ = live[rng.randrange(len(live))]
                length = rng.randint(0, sk_.shape[2])
                f = c.fork(src, length)
                m = rng.randint(1, 6)
                fk, fv = make_kv(MODEL_F16, m, seed=rng.randrange(1 << 30))
                c.append(f, fk, fv)  # no ids: the fork stops indexing, the source is unaffected
                k2 = np.concatenate([sk_[:, :, :length], fk], axis=2)
                v2 = np.concatenate([sv_[:, :, :length], fv], axis=2)
                assert_sequence(c, f, k2, v2, modes=("pages",))
                assert_sequence(c, src, sk_, sv_, modes=("pages",))
                if rng.random() < 0.3 and k2.shape[2] > 6:
                    # Copy-on-write compaction of the fork: the kept tokens are what StreamingLLM
                    # keeps, at their old positions; the source stays bit-exact.
                    c.compact(f, "streamingllm", sinks=2, recent=4)
                    t = k2.shape[2]
                    kept = list(range(2)) + list(range(t - 4, t))
                    assert_sequence(c, f, k2[:, :, kept], v2[:, :, kept], positions=kept, modes=("pages",))
                    assert_sequence(c, src, sk_, sv_, modes=("pages",))
                    c.release(f)
                else:
                    live.append((f, k2, v2))

                while len(live) > 4:
                    seq, k, v = live.pop(rng.randrange(len(live)))
                    assert_sequence(c, seq, k, v, modes=("pages",))
                    c.release(seq)
            for seq, k, v in live:
                assert_sequence(c, seq, k, v, modes=("pages",))
                c.release(seq)
    except BaseException as e:  # reported by the main thread
        failures.append((worker, repr(e)))


def test_fork_adopt_release_storm_gives_every_page_back(make_daemon):
    # Only the tiny f16 model (7,648 small pages). The manager may drop cached blocks, but
    # compresses and evicts nothing: every sequence stays whole for the checks.
    d = make_daemon(lambda cfg: memory_config(cfg, cfg["server"]["endpoints"][0], compress_policy="", evict=False))
    failures: list = []
    threads = [threading.Thread(target=storm, args=(d, w, failures)) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a storm client hung"
    assert not failures, failures

    with d.client() as c:
        s = c.stats()
        assert s.sequences == 0
        p = s.prefix
        assert p.hits > 0, "clients adopted each other's prompts"
        # Nothing but the index holds a page: cached pages are all unused, none shared.
        assert p.cached_pages == p.unused_pages and p.shared_pages == 0 and p.pages_saved == 0
        assert s.free_pages + p.unused_pages == s.total_pages
        # One sequence taking the whole segment: the append's reclaim drops every cached block,
        # which frees every page only if every reference count reaches zero.
        whole = s.total_pages // HEADS * P
        seq = c.create_sequence(MODEL_F16)
        k, v = make_kv(MODEL_F16, 64, seed=1)
        for _ in range(whole // 64):
            c.append(seq, k, v)
        rest = whole % 64
        if rest:
            c.append(seq, k[:, :, :rest], v[:, :, :rest])
        s = c.stats()
        assert s.free_pages == 0 and s.prefix.cached_blocks == 0
        c.release(seq)
        assert c.stats().free_pages == s.total_pages
