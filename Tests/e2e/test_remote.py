"""The remote tier against a real Redis (docs/REMOTE.md): the memory manager ships evicted
sequences to Redis; Restore brings them back bit-exact under their ids; a corrupted copy is never
served; Redis down or killed mid-offload leaves kvd serving from local memory, evicting as before
and counting the failures.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from conftest import MODEL_F16, ErrorCode, KvdError, assert_sequence, make_kv
from memory_helpers import HEADS, error_code, memory_config, wait_until
from redis_helpers import RedisNode


@pytest.fixture
def redis(tmp_path):
    node = RedisNode(tmp_path).start()
    yield node
    node.stop()


def daemon(make_daemon, redis: RedisNode, **remote):
    def mutate(cfg):
        # Eviction only (no compression), so what goes to Redis is exactly what was appended.
        memory_config(cfg, cfg["server"]["endpoints"][0], compress_policy="", high=0.9, low=0.8)
        cfg["remote"] = {"enabled": True, "nodes": [redis.address], "key_prefix": "kvdtest:",
                         "connect_timeout_ms": 200, "command_timeout_ms": 500, **remote}
    return make_daemon(mutate)


def fill(c, count: int, tokens: int = 64, seed: int = 0):
    """`count` idle sequences of random K/V; returns {id: (k, v)}."""
    made = {}
    for i in range(count):
        seq = c.create_sequence(MODEL_F16)
        k, v = make_kv(MODEL_F16, tokens, seed=seed + i)
        c.append(seq, k, v)
        made[seq] = (k, v)
    return made


def push_over_high(c, made: dict) -> list:
    """Fills until the manager evicts; returns the evicted ids (answering EVICTED)."""
    total = c.stats().total_pages
    per = HEADS * 64 // 4
    more = fill(c, int((0.95 * total - (total - c.stats().free_pages)) // per) + 1, seed=10_000)
    made.update(more)
    time.sleep(0.5)
    s = wait_until(lambda: (lambda s: s if s.memory.evictions > 0 and s.total_pages - s.free_pages <= 0.8 * s.total_pages else None)(c.stats()),
                   10.0, "the manager to evict")
    evicted = []
    for seq in made:
        try:
            c.stats(seq)
        except KvdError as e:
            assert e.code == ErrorCode.EVICTED
            evicted.append(seq)
    assert len(evicted) == s.memory.evictions
    return evicted


def test_evicted_sequences_go_to_redis_and_restore_bit_exact(make_daemon, redis):
    d = daemon(make_daemon, redis)
    with d.client() as c:
        made = fill(c, 20)
        evicted = push_over_high(c, made)
        err = error_code(lambda: c.stats(evicted[0]))
        assert "send Restore" in err.message
        r = wait_until(lambda: (lambda r: r if r.queued == 0 else None)(c.stats().remote), 10.0, "the offloads to ship")
        assert r.enabled and r.offloaded == len(evicted) and r.offload_failures == 0 and r.offload_dropped == 0
        assert sorted(redis.keys("kvdtest:default:seq:*")) == sorted(f"kvdtest:default:seq:{s}" for s in evicted)
        for seq in evicted:
            out = c.restore(seq)
            assert out.from_remote and out.length == 64 and out.generation == 1 and out.restore_us > 0
            k, v = made[seq]
            assert_sequence(c, seq, k, v)
            assert redis.cli("EXISTS", f"kvdtest:default:seq:{seq}") in ("0", "1")  # deletion is asynchronous
            c.release(seq)
        st = c.stats().remote
        assert st.restored == len(evicted) and st.restore_failures == 0 and st.restore_corrupted == 0
        assert st.mean_restore_us > 0
        wait_until(lambda: not redis.keys("kvdtest:*"), 5.0, "restored copies to be deleted from Redis")
        # Restore refuses what it cannot do, with the usual codes.
        live = next(s for s in made if s not in evicted)
        assert error_code(lambda: c.restore(live)).code == ErrorCode.ALREADY_EXISTS
        assert error_code(lambda: c.restore(123456789)).code == ErrorCode.NOT_FOUND


def test_a_corrupted_copy_is_never_served(make_daemon, redis):
    d = daemon(make_daemon, redis)
    with d.client() as c:
        made = fill(c, 20)
        evicted = push_over_high(c, made)
        wait_until(lambda: c.stats().remote.queued == 0, 10.0, "the offloads to ship")
        victim, intact = evicted[0], evicted[1]
        key = f"kvdtest:default:seq:{victim}"
        # Overwrite 8 bytes in the middle of the K/V payload.
        length = int(redis.cli("STRLEN", key))
        redis.cli("SETRANGE", key, str(length // 2), "XXXXXXXX")
        err = error_code(lambda: c.restore(victim))
        assert err.code == ErrorCode.EVICTED and "checksum" in err.message
        assert c.stats().remote.restore_corrupted == 1
        assert error_code(lambda: c.stats(victim)).code == ErrorCode.EVICTED  # lost, says so
        wait_until(lambda: redis.cli("EXISTS", key) == "0", 5.0, "the corrupted copy to be deleted")
        # Nothing else was affected.
        c.restore(intact)
        assert_sequence(c, intact, *made[intact])


def test_a_restore_that_does_not_fit_loses_nothing(make_daemon, redis):
    """Memory full of pinned sequences: Restore answers RESOURCE_EXHAUSTED, the remote copy stays
    (the id still says "send Restore"), nothing held changes, and once there is room the same
    Restore brings the sequence back bit-exact."""
    d = daemon(make_daemon, redis)
    with d.client() as c:
        made = fill(c, 20)
        evicted = push_over_high(c, made)
        wait_until(lambda: c.stats().remote.queued == 0, 10.0, "the offloads to ship")
        live = [s for s in made if s not in evicted]
        for s in live:
            c.pin(s, True)
        per = HEADS * 64 // 4
        hold = []
        while c.stats().free_pages >= per:
            seq = c.create_sequence(MODEL_F16, pinned=True)
            c.append(seq, *make_kv(MODEL_F16, 64, seed=20_000 + len(hold)))
            hold.append(seq)
        victim = evicted[0]
        key = f"kvdtest:default:seq:{victim}"
        free = c.stats().free_pages
        err = error_code(lambda: c.restore(victim))
        assert err.code == ErrorCode.RESOURCE_EXHAUSTED
        assert redis.cli("EXISTS", key) == "1"
        assert "send Restore" in error_code(lambda: c.stats(victim)).message
        assert c.stats().free_pages == free  # the pages a failed restore took went back
        for s in live[:3]:
            assert_sequence(c, s, *made[s])
        for seq in hold:
            c.release(seq)
        c.restore(victim)
        assert_sequence(c, victim, *made[victim])


def test_redis_down_keeps_kvd_serving_and_counts_failures(make_daemon, redis):
    d = daemon(make_daemon, redis)
    with d.client() as c:
        made = fill(c, 20)
        redis.stop()  # before anything is offloaded
        evicted = push_over_high(c, made)
        r = wait_until(lambda: (lambda r: r if r.queued == 0 else None)(c.stats().remote), 15.0, "the offloads to fail")
        assert r.offloaded == 0 and r.offload_failures == len(evicted)
        # The ids now say the K/V is gone (the offload failed), and Restore agrees.
        err = error_code(lambda: c.stats(evicted[0]))
        assert err.code == ErrorCode.EVICTED and "offload to the remote tier failed" in err.message
        assert error_code(lambda: c.restore(evicted[0])).code == ErrorCode.EVICTED
        # Local memory still serves everything else, bit-exact, and new work goes on.
        for seq in made:
            if seq not in evicted:
                assert_sequence(c, seq, *made[seq], modes=("pages",))
        fill(c, 2, seed=50_000)


def test_redis_killed_mid_offload(make_daemon, redis):
    d = daemon(make_daemon, redis, command_timeout_ms=300)
    with d.client() as c:
        made = fill(c, 20, tokens=64)
        total = c.stats().total_pages
        # Redis stalls (DEBUG SLEEP) while the evictions' offloads queue up, then dies.
        stall = subprocess.Popen(["redis-cli", "-p", str(redis.port), "DEBUG", "SLEEP", "2"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.1)
        evicted_before = c.stats().memory.evictions
        more = fill(c, int((0.97 * total - (total - c.stats().free_pages)) // (HEADS * 16)) + 1, seed=20_000)
        made.update(more)
        time.sleep(0.3)
        redis.stop()
        stall.wait(10)
        s = wait_until(lambda: (lambda s: s if s.memory.evictions > evicted_before and s.remote.queued == 0 else None)(c.stats()),
                       20.0, "evictions and every offload to finish or fail")
        r = s.remote
        assert r.offloaded + r.offload_failures + r.offload_dropped == s.memory.evictions
        # kvd is alive and serving.
        survivors = [seq for seq in made if error_code_or_none(c, seq) is None]
        assert survivors
        assert_sequence(c, survivors[-1], *made[survivors[-1]], modes=("pages",))


def error_code_or_none(c, seq):
    try:
        c.stats(seq)
        return None
    except KvdError as e:
        return e.code


def test_restore_without_a_remote_tier_is_refused(make_daemon):
    d = make_daemon()
    with d.client() as c:
        err = error_code(lambda: c.restore(42))
        assert err.code == ErrorCode.FAILED_PRECONDITION and "remote.enabled" in err.message


@pytest.fixture
def cluster(tmp_path):
    from conftest import REPO
    from redis_helpers import RedisCluster
    c = RedisCluster(tmp_path / "cluster", REPO / "scripts" / "redis.sh")
    (tmp_path / "cluster").mkdir()
    c.start()
    yield c
    c.stop()


def test_a_cluster_spreads_offloads_and_survives_a_dead_master(make_daemon, cluster):
    def mutate(cfg):
        memory_config(cfg, cfg["server"]["endpoints"][0], compress_policy="", high=0.9, low=0.8)
        cfg["remote"] = {"enabled": True, "mode": "cluster", "nodes": cluster.addresses[:2], "key_prefix": "kvdtest:",
                         "connect_timeout_ms": 200, "command_timeout_ms": 500}
    d = make_daemon(mutate)
    with d.client() as c:
        made = fill(c, 20)
        evicted = push_over_high(c, made)
        wait_until(lambda: c.stats().remote.queued == 0, 10.0, "the offloads to ship")
        assert c.stats().remote.offloaded == len(evicted)
        owners = {seq: cluster.slot_owner(f"kvdtest:default:seq:{seq}") for seq in evicted}
        assert len(set(owners.values())) >= 2, "keys spread over the masters"
        # A master dies: what it holds cannot come back now; everything else can.
        dead = owners[evicted[0]]
        cluster.kill(dead)
        for seq in evicted:
            if owners[seq] == dead:
                assert error_code(lambda: c.restore(seq)).code == ErrorCode.UNAVAILABLE
            else:
                out = c.restore(seq)
                assert out.from_remote
                assert_sequence(c, seq, *made[seq], modes=("pages",))
                c.release(seq)
        assert c.stats().remote.restore_failures == sum(1 for s in evicted if owners[s] == dead)


def test_offload_policy_compresses_before_shipping(make_daemon, redis):
    # remote.offload_policy "pressure": StreamingLLM with 4 sinks + 12 recent (memory_config's).
    d = daemon(make_daemon, redis, offload_policy="pressure")
    with d.client() as c:
        made = fill(c, 20)
        evicted = push_over_high(c, made)
        wait_until(lambda: c.stats().remote.queued == 0, 10.0, "the offloads to ship")
        seq = evicted[0]
        out = c.restore(seq)
        assert out.length == 64 and out.generation == 2  # compacted once, before the offload
        kept = list(range(4)) + list(range(52, 64))
        k, v = made[seq]
        assert_sequence(c, seq, k[:, :, kept], v[:, :, kept], positions=kept)
        assert out.bytes == HEADS * len(kept) * 8 * 2 * 2  # K and V, head_dim 8, f16
