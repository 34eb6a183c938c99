"""Prefix blocks shared between daemons through Redis (remote.share_prefixes, docs/REMOTE.md): a
second daemon (standing in for another machine) gets a prefix hit for a prompt only the first one
saw — bit-exact — and a corrupted block in Redis is refused, never served.
The tiny f16 model has 4 tokens per page: a 40-token prompt is 10 blocks.
"""
from __future__ import annotations

from conftest import MODEL_F16, assert_sequence, make_kv
from memory_helpers import wait_until
from redis_helpers import RedisNode
import pytest

KEY = "00112233445566778899aabbccddeeff"


@pytest.fixture
def redis(tmp_path):
    node = RedisNode(tmp_path).start()
    yield node
    node.stop()


def sharing(redis: RedisNode, key_file, own_prefix="kvdtest:"):
    """Daemons that share blocks under one `block_key_prefix`, each with its own `key_prefix`."""
    def mutate(cfg):
        cfg["prefix"] = {"enabled": True, "key_file": str(key_file)}
        cfg["remote"] = {"enabled": True, "nodes": [redis.address], "key_prefix": own_prefix, "block_key_prefix": "kvdtest:",
                         "share_prefixes": True, "offload_evicted": False}
    return mutate


def test_a_second_daemon_adopts_a_prefix_the_first_computed(make_daemon, redis, tmp_path):
    key_file = tmp_path / "prefix.key"
    key_file.write_text(KEY + "\n")
    first, second = make_daemon(sharing(redis, key_file, "one:")), make_daemon(sharing(redis, key_file, "two:"))
    ids = [7000 + t for t in range(40)]
    k, v = make_kv(MODEL_F16, 40, seed=11)
    with first.client() as a:
        seq = a.create_sequence(MODEL_F16)
        a.append(seq, k[:, :, :22], v[:, :, :22], token_ids=ids[:22])
        a.append(seq, k[:, :, 22:], v[:, :, 22:], token_ids=ids[22:], zero_copy=True)
        r = wait_until(lambda: (lambda r: r if r.blocks_published == 10 and r.queued == 0 else None)(a.stats().remote),
                       10.0, "the first daemon to publish its 10 blocks")
        assert r.blocks_publish_failures == 0
    assert len(redis.keys("kvdtest:default:blk:*")) == 10
    with second.client() as b:
        assert b.lookup(MODEL_F16, ids + [1, 2]) == 40
        created = b.create_sequence_ex(MODEL_F16, adopt_token_ids=ids + [1, 2])
        assert created.adopted_tokens == 40
        assert_sequence(b, created.sequence_id, k, v)
        st = b.stats()
        assert st.remote.blocks_imported == 10 and st.remote.blocks_rejected == 0
        assert st.prefix.cached_blocks == 10
        # A third prompt sharing the first 5 blocks: the second daemon already holds them.
        assert b.lookup(MODEL_F16, ids[:20] + [9] * 8) == 20
        assert b.stats().remote.blocks_imported == 10


def test_a_corrupted_block_is_refused(make_daemon, redis, tmp_path):
    key_file = tmp_path / "prefix.key"
    key_file.write_text(KEY + "\n")
    first, second = make_daemon(sharing(redis, key_file)), make_daemon(sharing(redis, key_file))
    ids = [9000 + t for t in range(24)]  # 6 blocks
    k, v = make_kv(MODEL_F16, 24, seed=12)
    with first.client() as a:
        seq = a.create_sequence(MODEL_F16)
        a.append(seq, k, v, token_ids=ids)
        wait_until(lambda: a.stats().remote.blocks_published == 6 and a.stats().remote.queued == 0, 10.0, "publishing")
    # The second daemon takes blocks 0-2 while they are intact; then every copy in Redis is
    # corrupted, so block 3, the next one it needs, fails its checks.
    keys = redis.keys("kvdtest:default:blk:*")
    assert len(keys) == 6
    with second.client() as b:
        assert b.lookup(MODEL_F16, ids[:12]) == 12
        imported = b.stats().remote.blocks_imported
        assert imported == 3
        for key in keys:
            length = int(redis.cli("STRLEN", key))
            redis.cli("SETRANGE", key, str(length - 5), "ZZZZ")
        assert b.lookup(MODEL_F16, ids) == 12  # blocks 0-2 are local now; block 3 fails its checks
        st = b.stats().remote
        assert st.blocks_rejected == 1 and st.blocks_imported == 3


def test_sharing_needs_a_common_key(make_daemon, redis):
    def mutate(cfg):
        cfg["remote"] = {"enabled": True, "nodes": [redis.address], "share_prefixes": True}
    d = make_daemon(mutate, start=False)
    d.start(wait=False)
    assert d.proc.wait(20) == 2
    assert "remote.share_prefixes needs" in d.stderr()
