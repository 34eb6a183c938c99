"""Crash safety against the real daemon: with `durability.enabled`, a SIGKILLed kvd restarted on
the same config adopts its segment and serves every committed sequence again bit-exact (K, V,
positions, log-weights, generation, pins), released ones stay gone, and the page counts add up.
A planned stop keeps everything with `keep_on_exit`; `--fresh` and an incompatible segment are
explicit. Without durability a restart starts empty, as before.
"""
from __future__ import annotations

import signal

import numpy as np

from conftest import MODEL_F16, MODEL_SEED_F32, ErrorCode, add_seed_models, make_kv, sequence_snapshot
from memory_helpers import error_code


def durable(cfg: dict, **extra) -> None:
    add_seed_models(cfg)
    cfg["durability"] = {"enabled": True, "directory": str(cfg["server"]["endpoints"][0][6:].rsplit("/", 1)[0]),
                         **extra}


def random_kv(seed: int, tokens: int):
    rng = np.random.default_rng(seed)
    shape = (4, 2, tokens, 16)
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


def populate(c):
    """A bit of everything the journal records; returns (live ids, released ids)."""
    live, gone = [], []
    k, v = random_kv(1, 70)
    plain = c.create_sequence(MODEL_SEED_F32)
    c.append(plain, k[:, :, :40], v[:, :, :40])
    c.append(plain, k[:, :, 40:], v[:, :, 40:], zero_copy=True)  # Reserve/Commit
    live.append(plain)
    weighted = c.create_sequence(MODEL_SEED_F32)
    k2, v2 = random_kv(2, 128)
    c.append(weighted, k2, v2)
    c.compact(weighted, "balancekv", sinks=4, recent=4, itrs=2)  # log-weights, copy-on-write pages
    live.append(weighted)
    aliased = c.create_sequence(MODEL_SEED_F32)
    c.append(aliased, k2[:, :, :64], v2[:, :, :64])
    c.compact(aliased, "kvsharer", alias_map="3:1")
    live.append(aliased)
    pinned = c.create_sequence(MODEL_SEED_F32, pinned=True)
    c.append(pinned, k[:, :, :9], v[:, :, :9], token_ids=list(range(9)))
    live.append(pinned)
    live.append(c.fork(plain, 37))  # shares whole pages, copies the partial one
    for i in range(3):
        s = c.create_sequence(MODEL_F16)
        kk, vv = make_kv(MODEL_F16, 10 + i, seed=i)
        c.append(s, kk, vv)
        if i == 1:
            c.release(s)
            gone.append(s)
        else:
            live.append(s)
    open_res = c.create_sequence(MODEL_SEED_F32)
    c.append(open_res, k[:, :, :8], v[:, :, :8])
    c.reserve(open_res, 16)  # never committed: rolled back on restart (its pages free again)
    live.append(open_res)
    return live, gone, open_res


def test_sigkill_then_restart_serves_every_committed_sequence(make_daemon):
    d = make_daemon(lambda cfg: durable(cfg))
    with d.client() as c:
        live, gone, open_res = populate(c)
        before = {s: sequence_snapshot(c, s) for s in live}
        reserved_pages = c.stats(open_res).sequence.pages - 8  # 8 tokens: one page per head
        pinned = {s: c.stats(s).sequence.pinned for s in live}
        used = c.stats().total_pages - c.stats().free_pages
    d.stop(signal.SIGKILL)
    assert d.shm_path.exists()
    d.start()
    assert "adopted shm" in d.stderr()
    with d.client() as c:
        s = c.stats()
        assert s.sequences == len(live)
        for seq in live:
            want = before[seq]
            if seq == open_res:  # the same, minus the reservation's pages
                want = want[:2] + (want[2] - reserved_pages,) + want[3:]
            assert sequence_snapshot(c, seq) == want, f"sequence {seq} changed across the crash"
            assert c.stats(seq).sequence.pinned == pinned[seq]
        for seq in gone:
            assert error_code(lambda: c.stats(seq)).code == ErrorCode.NOT_FOUND
        # The open reservation was rolled back: its pages are free again, nothing else changed.
        assert s.total_pages - s.free_pages == used - reserved_pages
        # Everything keeps working on the adopted segment: append, compact, release, create.
        k, v = random_kv(3, 5)
        c.append(live[0], k, v)
        c.compact(live[0], "streamingllm", sinks=4, recent=8)
        for seq in live:
            c.release(seq)
        assert c.stats().free_pages + c.stats().prefix.unused_pages == c.stats().total_pages
        fresh = c.create_sequence(MODEL_SEED_F32)
        c.append(fresh, k, v)


def test_planned_restart_keeps_the_segment_with_keep_on_exit(make_daemon):
    d = make_daemon(lambda cfg: durable(cfg, keep_on_exit=True))
    with d.client() as c:
        k, v = random_kv(4, 20)
        seq = c.create_sequence(MODEL_SEED_F32)
        c.append(seq, k, v)
        snap = sequence_snapshot(c, seq)
    assert d.stop(signal.SIGTERM) == 0
    assert d.shm_path.exists()
    d.start()
    with d.client() as c:
        assert sequence_snapshot(c, seq) == snap
        c.release(seq)
    assert d.stop(signal.SIGTERM) == 0
    d.start(args=["--fresh"])
    with d.client() as c:
        assert c.stats().sequences == 0
    # Kept once more on this stop; an operator done with it removes the segment by hand.
    assert d.stop(signal.SIGTERM) == 0
    assert d.shm_path.exists()
    d.shm_path.unlink()


def test_fresh_and_incompatible_segments_are_explicit(make_daemon):
    d = make_daemon(lambda cfg: durable(cfg))
    with d.client() as c:
        seq = c.create_sequence(MODEL_SEED_F32)
        k, v = random_kv(5, 12)
        c.append(seq, k, v)
    d.stop(signal.SIGKILL)
    # Another arena size: refused, naming what differs, and the segment is left alone.
    original = d.config_path.read_text()
    d.config_path.write_text(original.replace('size_bytes: "32MiB"', 'size_bytes: "16MiB"'))
    d.start(wait=False)
    assert d.proc.wait(20) != 0
    log = d.stderr()
    assert "left by an earlier kvd" in log and "--fresh" in log
    assert d.shm_path.exists()
    # The old config adopts it again...
    d.config_path.write_text(original)
    d.start()
    with d.client() as c:
        assert c.stats(seq).sequence.length == 12
    d.stop(signal.SIGKILL)
    # ... and --fresh starts empty.
    d.start(args=["--fresh"])
    with d.client() as c:
        assert c.stats().sequences == 0
        assert error_code(lambda: c.stats(seq)).code == ErrorCode.NOT_FOUND


def test_without_durability_a_restart_starts_empty(make_daemon):
    d = make_daemon(lambda cfg: add_seed_models(cfg))
    with d.client() as c:
        seq = c.create_sequence(MODEL_SEED_F32)
        k, v = random_kv(6, 8)
        c.append(seq, k, v)
    d.stop(signal.SIGKILL)
    d.start()
    assert "removed a shared-memory segment" in d.stderr()
    with d.client() as c:
        assert c.stats().sequences == 0
