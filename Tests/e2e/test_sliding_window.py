"""Per-layer sliding windows (``layer_windows``) against the real daemon: after every Append or
Commit a sliding layer holds exactly the pages a NumPy model of the rule predicts (docs/MEMORY.md,
"Sliding windows": positions >= L - W, whole pages), full layers keep everything, retained K/V
are bit-exact, the generation does not move, Stats' pages and the freed counter match the page
arithmetic, compaction leaves sliding layers bit-identical, prefix adopt and fork take only what
the window needs, eviction still works, and a restart from the journal reproduces the state.
"""
from __future__ import annotations

import signal

import numpy as np
import pytest

from conftest import ErrorCode, model_entry, sequence_snapshot
from kvd import KvdError
from memory_helpers import error_code

SW = "sw-f32"  # 4 layers x 2 KV heads, 4 tokens a page; layer 0 slides by 8, layer 2 by 6
SW_LAYOUT = dict(layers=4, kv_heads=2, q_heads=4, head_dim=8, page_tokens=4)
SW_WINDOWS = [8, 0, 6, 0]
GEMMA = "gemma3-270m"
GEMMA_LAYOUT = dict(layers=18, kv_heads=1, q_heads=4, head_dim=256, page_tokens=16)
GEMMA_WINDOWS = [0 if l in (5, 11, 17) else 512 for l in range(18)]


def sliding_config(cfg: dict, **extra) -> None:
    cfg["models"].append({**model_entry(SW, "f32", **SW_LAYOUT), "layer_windows": SW_WINDOWS})
    cfg["arena"]["size_bytes"] = "2MiB"
    cfg.update(extra)


# ---------------------------------------------------------------------------------------------
# The rule, written independently of the daemon's code: page i of a head covers positions
# i*P .. i*P+P-1 and is dropped once its last position is below L - W.

def held_positions(length: int, window: int, page: int) -> np.ndarray:
    pos = np.arange(length)
    if window == 0:
        return pos
    page_last = (pos // page) * page + page - 1
    return pos[page_last >= length - window]


def head_pages(length: int, window: int, page: int) -> int:
    held = held_positions(length, window, page)
    return len(np.unique(held // page))


def dropped_pages(length: int, windows, kv_heads: int, page: int) -> int:
    all_pages = -(-length // page)
    return sum(kv_heads * (all_pages - head_pages(length, w, page)) for w in windows)


def random_kv(seed: int, tokens: int, layout=SW_LAYOUT, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shape = (layout["layers"], layout["kv_heads"], tokens, layout["head_dim"])
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


def check_state(c, seq: int, k: np.ndarray, v: np.ndarray, windows=SW_WINDOWS, layout=SW_LAYOUT,
                mode="inline"):
    """Every head's positions and bytes against the rule; the sequence's page count too."""
    length = k.shape[2]
    q = c.query(seq, mode=mode, copy=True)
    assert q.length == length and q.generation == 1
    pages = 0
    for layer, w in enumerate(windows):
        expect = held_positions(length, w, layout["page_tokens"])
        for h in range(layout["kv_heads"]):
            head = q[layer, h]
            np.testing.assert_array_equal(head.positions, expect)
            assert head.keys.tobytes() == k[layer, h, expect].tobytes()
            assert head.values.tobytes() == v[layer, h, expect].tobytes()
        pages += layout["kv_heads"] * head_pages(length, w, layout["page_tokens"])
    assert c.stats(seq).sequence.pages == pages


# ---------------------------------------------------------------------------------------------

def test_hello_lists_layer_windows(make_daemon):
    d = make_daemon(sliding_config)
    with d.client() as c:
        assert list(c.models[SW].layer_windows) == SW_WINDOWS
        assert list(c.models["tiny-f16"].layer_windows) == []  # all full attention


def test_c_client_reads_the_windows(make_daemon):
    import ctypes

    from c_build import build_c_client
    lib_path = build_c_client() / "libkvdclient.so"
    lib = ctypes.CDLL(str(lib_path))
    lib.kvd_client_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                       ctypes.c_char_p, ctypes.c_size_t]
    lib.kvd_client_hello.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.kvd_hello_layer_window.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    lib.kvd_hello_layer_window.restype = ctypes.c_uint32
    lib.kvd_hello_info_free.argtypes = [ctypes.c_void_p]
    lib.kvd_client_free.argtypes = [ctypes.c_void_p]
    d = make_daemon(sliding_config)
    client, info = ctypes.c_void_p(), ctypes.c_void_p()
    err = ctypes.create_string_buffer(256)
    assert lib.kvd_client_connect(d.endpoint.encode(), None, ctypes.byref(client), err, 256) == 0, err.value
    try:
        assert lib.kvd_client_hello(client, ctypes.byref(info)) == 0
        got = [lib.kvd_hello_layer_window(info, SW.encode(), layer) for layer in range(5)]
        assert got == SW_WINDOWS + [0]  # layer 4 is out of range: 0
        assert lib.kvd_hello_layer_window(info, b"tiny-f16", 0) == 0
        assert lib.kvd_hello_layer_window(info, b"no-such-model", 0) == 0
        lib.kvd_hello_info_free(info)
    finally:
        lib.kvd_client_free(client)


@pytest.mark.parametrize("step", [1, 3, 4, 5, 37])
def test_appends_keep_exactly_the_window(make_daemon, step):
    d = make_daemon(sliding_config)
    with d.client() as c:
        k, v = random_kv(step, 90)
        seq = c.create_sequence(SW)
        freed_before = c.stats().memory.window_freed_pages
        total, free0 = c.stats().total_pages, c.stats().free_pages
        n = 0
        while n < 90:
            m = min(step, 90 - n)
            r = c.append(seq, k[:, :, n:n + m], v[:, :, n:n + m])
            n += m
            assert r.length == n and r.generation == 1
            check_state(c, seq, k[:, :, :n], v[:, :, :n])
            st = c.stats()
            assert st.memory.window_freed_pages - freed_before == dropped_pages(n, SW_WINDOWS, 2, 4)
            assert st.memory.window_returned_pages == st.memory.window_freed_pages  # nothing shared
            assert free0 - st.free_pages == c.stats(seq).sequence.pages
        assert total == c.stats().total_pages


def test_zero_copy_commits_free_like_appends(make_daemon):
    d = make_daemon(sliding_config)
    with d.client() as c:
        k, v = random_kv(11, 60)
        seq = c.create_sequence(SW)
        for a, b in [(0, 13), (13, 17), (17, 60)]:
            c.append(seq, k[:, :, a:b], v[:, :, a:b], zero_copy=True)
            check_state(c, seq, k[:, :, :b], v[:, :, :b])
        # Pieces that end inside a page and pieces that cross several.
        k2, v2 = random_kv(12, 20)
        kk, vv = np.concatenate([k, k2], 2), np.concatenate([v, v2], 2)
        c.append(seq, k2[:, :, :7], v2[:, :, :7], zero_copy=True)
        check_state(c, seq, kk[:, :, :67], vv[:, :, :67])
        c.append(seq, k2[:, :, 7:], v2[:, :, 7:], zero_copy=True)
        check_state(c, seq, kk, vv)


def test_compaction_leaves_sliding_layers_bit_identical(make_daemon):
    d = make_daemon(sliding_config)
    with d.client() as c:
        k, v = random_kv(21, 60)
        rng = np.random.default_rng(5)
        queries = rng.standard_normal((4, 4, 4, 8)).astype(np.float32)
        for method, params, q in [("streamingllm", dict(sinks=2, recent=8), None),
                                  ("knorm", dict(budget=8), None),
                                  ("snapkv", dict(budget=8), queries),
                                  ("h2o", dict(budget=8), queries),
                                  ("pyramidkv", dict(budget=8), queries),
                                  ("adakv", dict(budget=8), queries),
                                  ("balancekv", dict(sinks=2, recent=4, itrs=1), None)]:
            seq = c.create_sequence(SW)
            c.append(seq, k, v)
            before = c.query(seq, mode="inline", copy=True)
            r = c.compact(seq, method, queries=q, **params)
            after = c.query(seq, mode="inline", copy=True)
            for i, (layer, h) in enumerate(zip(r.layers, r.head_indices)):
                if SW_WINDOWS[layer] > 0:
                    assert r.kept[i] == r.before[i], (method, layer, h)
                    a, b = after[int(layer), int(h)], before[int(layer), int(h)]
                    assert a.positions.tobytes() == b.positions.tobytes(), method
                    assert a.keys.tobytes() == b.keys.tobytes() and a.values.tobytes() == b.values.tobytes()
                    assert a.log_weights.tobytes() == b.log_weights.tobytes()
                    if len(r.budgets):
                        assert r.budgets[i] == 0
                else:
                    assert r.kept[i] < 60, (method, layer)
            # Appends after a compaction still slide the window (positions stay the rule's).
            k2, v2 = random_kv(22, 9)
            c.append(seq, k2, v2)
            q2 = c.query(seq, mode="metadata")
            for layer, w in enumerate(SW_WINDOWS):
                if w:
                    np.testing.assert_array_equal(q2[layer, 0].positions, held_positions(69, w, 4))
            c.release(seq)


def test_kvsharer_refuses_aliases_across_windows(make_daemon):
    d = make_daemon(sliding_config)
    with d.client() as c:
        k, v = random_kv(31, 20)
        seq = c.create_sequence(SW)
        c.append(seq, k, v)
        e = error_code(lambda: c.compact(seq, "kvsharer", alias_map="1:0"))
        assert e.code == ErrorCode.INVALID_ARGUMENT and "same window" in str(e)
        r = c.compact(seq, "kvsharer", alias_map="3:1")
        assert {a.layer: a.owner for a in r.aliases} == {3: 1}


def test_prefix_adopt_and_fork_take_only_the_window(make_daemon):
    d = make_daemon(sliding_config)
    with d.client() as c:
        k, v = random_kv(41, 40)
        ids = list(range(100, 140))
        src = c.create_sequence(SW)
        c.append(src, k, v, token_ids=ids)
        check_state(c, src, k, v)
        # Every block the appends filled was indexed with every head's page, sliding ones too.
        assert c.stats().prefix.cached_blocks == 10
        a = c.create_sequence_ex(SW, adopt_token_ids=ids[:24] + [7])
        assert a.adopted_tokens == 24
        check_state(c, a.sequence_id, k[:, :, :24], v[:, :, :24])
        # It goes on appending like any sequence.
        k2, v2 = random_kv(42, 9)
        c.append(a.sequence_id, k2, v2)
        check_state(c, a.sequence_id, np.concatenate([k[:, :, :24], k2], 2), np.concatenate([v[:, :, :24], v2], 2))
        # Fork: at the source's length it shares; earlier than the window still held, refused.
        f = c.fork(src, 40)
        check_state(c, f, k, v)
        e = error_code(lambda: c.fork(src, 30))
        assert e.code == ErrorCode.FAILED_PRECONDITION and "sliding window" in str(e)
        # The source's later appends release pages the fork and the index still hold: by reference.
        k3, v3 = random_kv(43, 16)
        c.append(src, k3, v3)
        check_state(c, f, k, v)
        check_state(c, src, np.concatenate([k, k3], 2), np.concatenate([v, v3], 2))
        st = c.stats().memory
        assert st.window_returned_pages < st.window_freed_pages


def test_restart_from_the_journal_reproduces_the_state(make_daemon):
    def durable(cfg):
        sliding_config(cfg)
        cfg["durability"] = {"enabled": True,
                             "directory": str(cfg["server"]["endpoints"][0][6:].rsplit("/", 1)[0])}
    d = make_daemon(durable)
    with d.client() as c:
        k, v = random_kv(51, 70)
        seq = c.create_sequence(SW)
        for a in range(0, 70, 9):
            c.append(seq, k[:, :, a:a + 9], v[:, :, a:a + 9], token_ids=range(a, min(a + 9, 70)))
        z = c.create_sequence(SW)
        c.append(z, k[:, :, :33], v[:, :, :33], zero_copy=True)
        before = {s: sequence_snapshot(c, s) for s in (seq, z)}
        st = c.stats()
        used = st.total_pages - st.free_pages
    d.stop(signal.SIGKILL)
    d.start()
    with d.client() as c:
        for s, snap in before.items():
            assert sequence_snapshot(c, s) == snap
        st = c.stats()
        assert st.total_pages - st.free_pages == used
        check_state(c, seq, k, v)
        # And it goes on sliding after the restart.
        k2, v2 = random_kv(52, 11)
        c.append(seq, k2, v2)
        check_state(c, seq, np.concatenate([k, k2], 2), np.concatenate([v, v2], 2))


def test_eviction_still_works_with_sliding_sequences(make_daemon):
    def pressured(cfg):
        sliding_config(cfg)
        cfg["arena"]["size_bytes"] = "1MiB"
        cfg["server"]["max_sequences"] = 256
        cfg["memory"] = {"high": 0.9, "low": 0.8, "interval_ms": 50, "busy_ms": 0, "evict": True,
                         "compress_policy": ""}
    d = make_daemon(pressured)
    with d.client() as c:
        total = c.stats().total_pages
        k, v = random_kv(61, 64)
        per_seq = sum(2 * head_pages(64, w, 4) for w in SW_WINDOWS)
        seqs = []
        # Three arenas' worth of sequences: the manager must evict idle ones, oldest first.
        for _ in range(3 * total // per_seq):
            s = c.create_sequence(SW)
            seqs.append(s)
            c.append(s, k, v)
        m = c.stats().memory
        assert m.evictions >= 1
        codes = [error_code_or_none(lambda: c.stats(s)) for s in seqs]
        gone = [s for s, code in zip(seqs, codes) if code == ErrorCode.EVICTED]
        alive = [s for s, code in zip(seqs, codes) if code is None]
        assert len(gone) == m.evictions and len(gone) + len(alive) == len(seqs)
        assert gone == seqs[:len(gone)], "oldest first"
        check_state(c, seqs[-1], k, v)
        st = c.stats()
        assert st.total_pages - st.free_pages == sum(c.stats(s).sequence.pages for s in alive) == per_seq * len(alive)


def error_code_or_none(fn):
    try:
        fn()
    except KvdError as e:
        return e.code
    return None


def test_gemma_layout_pages_for_4096_tokens(make_daemon):
    """Gemma-3-270M's real layout (f16, 18 layers x 1 KV head x 256, windows of 512 on all but
    layers 5, 11, 17) against the same layout with every layer full: pages held after 4,096 tokens."""
    def gemma(cfg):
        cfg["models"].append({**model_entry(GEMMA, "f16", **GEMMA_LAYOUT), "layer_windows": GEMMA_WINDOWS})
        cfg["models"].append(model_entry(GEMMA + "-full", "f16", **GEMMA_LAYOUT))
        cfg["arena"]["size_bytes"] = "128MiB"
        cfg["server"]["max_message_bytes"] = "64MiB"
        cfg["server"]["max_tokens_per_append"] = 4096
    d = make_daemon(gemma)
    with d.client() as c:
        assert list(c.models[GEMMA].layer_windows) == GEMMA_WINDOWS
        k, v = random_kv(71, 4096, GEMMA_LAYOUT, np.float16)
        held = {}
        for model in (GEMMA, GEMMA + "-full"):
            seq = c.create_sequence(model)
            for a in range(0, 4096, 512):
                c.append(seq, k[:, :, a:a + 512], v[:, :, a:a + 512], zero_copy=True)
            held[model] = c.stats(seq).sequence.pages
            if model == GEMMA:
                gemma_seq = seq
        windows = GEMMA_WINDOWS
        assert held[GEMMA + "-full"] == 18 * 256
        assert held[GEMMA] == sum(head_pages(4096, w, 16) for w in windows) == 3 * 256 + 15 * 32
        check_state(c, gemma_seq, k, v, windows, GEMMA_LAYOUT, mode="pages")
        print(f"\ngemma3-270m, 4096 tokens: {held[GEMMA]} pages with windows, {held[GEMMA + '-full']} without, "
              f"ratio {held[GEMMA] / held[GEMMA + '-full']:.3f}")



def test_rank_layers_pairs_only_equal_windows(make_daemon):
    d = make_daemon(sliding_config)
    with d.client() as c:
        k, v = random_kv(81, 6)  # no longer than the smallest window: every head holds all 6
        seqs = []
        for i in range(2):
            s = c.create_sequence(SW)
            c.append(s, k + i, v - i)
            seqs.append(s)
        pairs = c.rank_layers(seqs)
        # Windows 8, 0, 6, 0: the only pair with equal windows is the two full layers (of the six
        # pairs the distance ranks, the five others would alias across windows).
        assert {(a, b) for a, b, _ in pairs} == {(3, 1)}
        long = c.create_sequence(SW)
        k2, v2 = random_kv(82, 12)
        c.append(long, k2, v2)
        e = error_code(lambda: c.rank_layers([long]))
        assert e.code == ErrorCode.FAILED_PRECONDITION and "smallest sliding window (6 tokens)" in str(e)


# A C plugin that reads the windows through kvd_layer_window(): it fails (INTERNAL, message with
# the windows it saw) when called for a head of a sliding layer, and with report=1 on any call.
WINDOW_PROBE = r"""
#include <stdio.h>
#include "kvd_plugin.h"

static const kvd_param_spec specs[] = {
    {.name = "report", .type = KVD_PARAM_INT, .default_number = 0, .min_value = 0, .max_value = 1,
     .description = "fail with the windows seen"},
};

static int32_t score(void *s, const kvd_head_call *c, float *out, char *e, size_t n) {
    (void)s;
    const kvd_model_info *m = c->model;
    int report = 0;
    for (uint32_t i = 0; i < c->num_params; i++)
        if (kvd_param_at(c, i)->type == KVD_PARAM_INT) report = (int)kvd_param_at(c, i)->int_value;
    if (report || kvd_layer_window(m, c->head->layer) != 0) {
        int at = snprintf(e, n, "%s layer %u windows", report ? "report" : "sliding head", c->head->layer);
        for (uint32_t l = 0; l < m->layers && at > 0 && (size_t)at < n; l++)
            at += snprintf(e + at, n - (size_t)at, " %u", kvd_layer_window(m, l));
        return 1;
    }
    for (uint32_t t = 0; t < c->head->num_tokens - c->window; t++) out[t] = (float)t;
    return 0;
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .abi_minor = KVD_PLUGIN_ABI_MINOR, .name = "window_probe", .version = "0.1.0",
    .description = "test: reads kvd_layer_window", .params = specs, .num_params = 1,
    .param_spec_size = sizeof(kvd_param_spec), .score_head = score,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
"""


def test_c_plugins_see_the_windows_and_never_a_sliding_head(make_daemon, tmp_path):
    import shutil
    import subprocess

    from conftest import REPO
    if shutil.which("cc") is None:
        pytest.fail("cc is needed to build the probe plugin")
    src = tmp_path / "window_probe.c"
    src.write_text(WINDOW_PROBE)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    subprocess.run(["cc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                    f"-I{REPO / 'Sources' / 'CKVDPluginABI' / 'include'}", "-o", str(plugins / "window_probe.so"),
                    str(src)], check=True)
    d = make_daemon(lambda cfg: (sliding_config(cfg), cfg.__setitem__("plugins", {"directories": [str(plugins)]})))
    with d.client() as c:
        k, v = random_kv(91, 40)
        seq = c.create_sequence(SW)
        c.append(seq, k, v)
        e = error_code(lambda: c.compact(seq, "window_probe", report=1, budget=4, window=2))
        assert e.code == ErrorCode.INTERNAL and "windows 8 0 6 0" in str(e)
        before = c.query(seq, mode="inline", copy=True)
        r = c.compact(seq, "window_probe", budget=4, window=2)  # never called for layers 0 and 2
        after = c.query(seq, mode="inline", copy=True)
        for i, layer in enumerate(r.layers):
            if SW_WINDOWS[layer]:
                assert r.kept[i] == r.before[i]
                assert after[int(layer), 0].keys.tobytes() == before[int(layer), 0].keys.tobytes()
            else:
                assert r.kept[i] == 6  # budget 4 + window 2


def test_offload_to_redis_and_restore_keep_the_window(make_daemon, tmp_path):
    from memory_helpers import wait_until
    from redis_helpers import RedisNode
    redis = RedisNode(tmp_path).start()
    try:
        def remote(cfg):
            sliding_config(cfg)
            cfg["server"]["max_sequences"] = 256
            cfg["memory"] = {"high": 0.9, "low": 0.8, "interval_ms": 50, "busy_ms": 0, "evict": True,
                             "compress_policy": ""}
            cfg["remote"] = {"enabled": True, "nodes": [redis.address], "key_prefix": "kvdsw:",
                             "connect_timeout_ms": 200, "command_timeout_ms": 500}
        d = make_daemon(remote)
        with d.client() as c:
            k, v = random_kv(101, 64)
            seqs = []
            for i in range(40):
                s = c.create_sequence(SW)
                c.append(s, k + i, v + i)
                seqs.append(s)
                if c.stats().memory.evictions > 0:
                    break
            assert c.stats().memory.evictions > 0
            wait_until(lambda: c.stats().remote.queued == 0 and c.stats().remote.offloaded > 0, 10.0, "the offloads to ship")
            gone = next(s for s in seqs if error_code_or_none(lambda: c.stats(s)) == ErrorCode.EVICTED)
            i = seqs.index(gone)
            out = c.restore(gone)
            assert out.from_remote and out.length == 64 and out.generation == 1
            check_state(c, gone, k + i, v + i)
            # It goes on sliding after the restore.
            k2, v2 = random_kv(102, 13)
            c.append(gone, k2, v2)
            check_state(c, gone, np.concatenate([k + i, k2], 2), np.concatenate([v + i, v2], 2))
    finally:
        redis.stop()
