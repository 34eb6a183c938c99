"""KVSharer: RankLayers against NumPy (reference_seed.layer_distance_ranking) and its refusals;
layer aliases (pages freed, Stats, CompactResponse.aliases, queries answered from the owner
bit-exact, appends ignoring aliased layers, chains), the alias rules, and the sharer in policies.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import reference as ref
import reference_seed as rs
from conftest import (MODEL_SEED_F16, MODEL_SEED_F32, SEED_MODELS, SEEDM, ErrorCode, KvdError,
                      assert_bits_equal, fill_sequence, sequence_snapshot, start_module_daemon,
                      stop_module_daemon)

L, H, HQ, D, PT = (SEEDM["layers"], SEEDM["kv_heads"], SEEDM["q_heads"], SEEDM["head_dim"],
                   SEEDM["page_tokens"])
N = 40  # 5 pages per head

POLICIES = {
    "snap_share": {"method": "snapkv", "sharer": "kvsharer", "params": {"budget": 6, "alias_map": "3:1"}},
    "share_only": {"sharer": "kvsharer", "params": {"alias_map": "2:0"}},
}


@pytest.fixture(scope="module")
def daemon():
    d = start_module_daemon(POLICIES)
    yield d
    stop_module_daemon(d)


@pytest.fixture(scope="module")
def c(daemon):
    cl = daemon.client()
    yield cl
    cl.close()


def layered_kv(seed, n=N, model=MODEL_SEED_F32):
    """Layers with different offsets and scales, so the pair distances are well apart."""
    rng = np.random.default_rng(seed)
    dt = SEED_MODELS[model]
    off = rng.standard_normal((L, 1, 1, D)) * np.arange(1, L + 1)[:, None, None, None]
    scale = (1 + np.arange(L) * 0.7)[:, None, None, None]
    K = off + scale * rng.standard_normal((L, H, n, D))
    V = -off + scale * rng.standard_normal((L, H, n, D))
    return K.astype(dt), V.astype(dt)


def heads_by_layer(c, seq, mode="inline"):
    """{(layer, head): HeadData} detached from shared memory."""
    return {(h.layer, h.head): h for h in c.query(seq, mode=mode, copy=True)}


def assert_layer_reads(c, seq, expect, K, V, modes=("pages", "inline", "gather")):
    """``expect``: layer → owner; every head of layer l answers with K/V [L, H, n, d] of its owner,
    positions 0..n−1 and log-weights 0."""
    for mode in modes:
        q = heads_by_layer(c, seq, mode)
        for l in range(L):
            o = expect.get(l, l)
            for h in range(H):
                hd = q[(l, h)]
                assert_bits_equal(hd.keys, K[o, h], f"{mode} K layer {l} (owner {o}) head {h}")
                assert_bits_equal(hd.values, V[o, h], f"{mode} V layer {l} (owner {o}) head {h}")
                assert hd.positions.tolist() == list(range(K.shape[2])), f"{mode} positions {l}"
                assert hd.log_weights.view(np.uint32).tolist() == [0] * K.shape[2]


def aliases_of(r):
    return sorted((a.layer, a.owner) for a in r.aliases)


# ---------------------------------------------------------------------------------------------
# RankLayers

@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("model", [MODEL_SEED_F32, MODEL_SEED_F16])
def test_rank_layers_matches_numpy(c, count, model):
    data = [layered_kv(20 + i, model=model) for i in range(count)]
    seqs = [fill_sequence(c, model, K, V, chunk=40) for K, V in data]
    got = c.rank_layers(seqs)
    want = rs.layer_distance_ranking([K for K, _ in data], [V for _, V in data])
    assert len(got) == L * (L - 1) // 2
    assert [(l, o) for l, o, _ in got] == [(l, o) for l, o, _ in want], (got, want)
    np.testing.assert_allclose([d for _, _, d in got], [d for _, _, d in want], rtol=1e-5)
    assert all(a[2] >= b[2] for a, b in zip(got, got[1:]))
    # ranking reads and changes nothing
    for s in seqs:
        assert c.stats(s).sequence.generation == 1
        c.release(s)


def test_rank_layers_ties(c):
    """Identical layers tie at distance 0 (and equal pairs tie): order (layer, other) ascending."""
    K, V = layered_kv(30)
    K[2], V[2] = K[0], V[0]
    K[3], V[3] = K[1], V[1]
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    got = c.rank_layers([seq])
    want = rs.layer_distance_ranking([K], [V])
    assert [(l, o) for l, o, _ in got] == [(l, o) for l, o, _ in want]
    assert got[-2:] == [(2, 0, 0.0), (3, 1, 0.0)]
    c.release(seq)


def test_rank_layers_errors(c):
    K, V = layered_kv(31)
    a = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    shorter = fill_sequence(c, MODEL_SEED_F32, K[:, :, :32], V[:, :, :32], chunk=40)
    other_model = fill_sequence(c, MODEL_SEED_F16, K.astype(np.float16), V.astype(np.float16), chunk=40)
    empty = c.create_sequence(MODEL_SEED_F32)
    snaps = {s: sequence_snapshot(c, s) for s in (a, shorter, other_model)}

    def refused(seqs, code):
        with pytest.raises(KvdError) as e:
            c.rank_layers(seqs)
        assert e.value.code == code, e.value

    refused([a, shorter], ErrorCode.INVALID_ARGUMENT)
    refused([a, other_model], ErrorCode.INVALID_ARGUMENT)
    refused([], ErrorCode.INVALID_ARGUMENT)
    refused([a, a], ErrorCode.INVALID_ARGUMENT)
    refused([empty], ErrorCode.FAILED_PRECONDITION)
    refused([a, 987654], ErrorCode.NOT_FOUND)

    # a compacted sequence whose heads hold different counts (DBudgetKV cuts per layer)
    rng = np.random.default_rng(3)
    Kc = rng.standard_normal((L, H, N, D)).astype(np.float32)
    Q = (0.3 * rng.standard_normal((L, HQ, 8, D))).astype(np.float32)
    for l in range(L):
        u = rng.standard_normal(D)
        u /= np.linalg.norm(u)
        Q[l, :] += 4 * u
        Kc[l, :, :l + 1] = 5 * u  # layer l: l + 1 heavy tokens
    compacted = fill_sequence(c, MODEL_SEED_F32, Kc, V, chunk=40)
    c.compact(compacted, "dbudgetkv", queries=Q)
    counts = [h.num_tokens for h in c.query(compacted, mode="metadata")]
    assert len(set(counts)) > 1, f"test data: DBudgetKV kept equal counts {counts}"
    refused([compacted], ErrorCode.FAILED_PRECONDITION)

    # an aliased sequence
    aliased = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    c.compact(aliased, "kvsharer", alias_map="3:1")
    refused([aliased], ErrorCode.FAILED_PRECONDITION)
    refused([a, aliased], ErrorCode.FAILED_PRECONDITION)

    for s, snap in snaps.items():
        assert sequence_snapshot(c, s) == snap
    assert c.rank_layers([a]) == c.rank_layers([a])  # still fine afterwards
    for s in (a, shorter, other_model, empty, compacted, aliased):
        c.release(s)


# ---------------------------------------------------------------------------------------------
# Aliases

def test_alias_frees_pages_and_reads_owner(c):
    K, V = layered_kv(40)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    st0, free0 = c.stats(seq).sequence, c.stats().free_pages
    per_head = -(-N // PT)
    assert st0.pages == L * H * per_head and st0.aliased_layers == 0
    r = c.compact(seq, "kvsharer", alias_map="3:1")
    assert r.method == "kvsharer"
    assert aliases_of(r) == [(3, 1)]
    assert r.pages_freed == H * per_head
    assert r.bytes_freed == r.pages_freed * c.stats().page_bytes
    st1, free1 = c.stats(seq).sequence, c.stats().free_pages
    assert st1.pages == st0.pages - H * per_head
    assert free1 == free0 + H * per_head
    assert st1.aliased_layers == 1
    assert st1.tokens_held == st0.tokens_held - H * N
    assert st1.generation == st0.generation + 1
    assert st1.length == N
    assert_layer_reads(c, seq, {3: 1}, K, V)
    # asking for layer 3 alone answers with layer 1's data
    only = c.query(seq, layers=[3], mode="inline", copy=True)
    assert [(h.layer, h.head) for h in only] == [(3, 0), (3, 1)]
    for h in only:
        assert_bits_equal(h.keys, K[1, h.head], "layer 3 alone")
    c.release(seq)


@pytest.mark.parametrize("mode", ["pages", "inline", "gather", "metadata"])
def test_copied_query_keeps_alias_fields(c, mode):
    """``query(copy=True)`` detaches the arrays but keeps what each head is: after the chain
    "2:1,3:2" (→ 2 and 3 alias 1), heads of layers 2 and 3 say aliased, owner 1, with layer 1's
    data; the others are their own owners. Same fields as the uncopied result."""
    K, V = layered_kv(46)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    c.compact(seq, "kvsharer", alias_map="2:1,3:2")
    want = {0: 0, 1: 1, 2: 1, 3: 1}
    copied = list(c.query(seq, mode=mode, copy=True))
    plain = list(c.query(seq, mode=mode))
    assert [(h.layer, h.head) for h in copied] == [(l, h) for l in range(L) for h in range(H)]
    for cp, pl in zip(copied, plain):
        assert (cp.aliased, cp.owner_layer) == (cp.layer != want[cp.layer], want[cp.layer]), \
            f"{mode} layer {cp.layer} head {cp.head}: aliased {cp.aliased} owner {cp.owner_layer}"
        assert (cp.aliased, cp.owner_layer) == (pl.aliased, pl.owner_layer)
        if mode != "metadata":
            assert_bits_equal(cp.keys, K[want[cp.layer], cp.head], f"{mode} copied K {cp.layer}")
            assert not np.shares_memory(cp.keys, pl.keys)
    c.release(seq)


@pytest.mark.parametrize("zero_copy", [False, True])
def test_append_after_alias_ignores_aliased_layers(c, zero_copy):
    K, V = layered_kv(41)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    c.compact(seq, "kvsharer", alias_map="3:1")
    pages = c.stats(seq).sequence.pages
    K2, V2 = layered_kv(42, n=12)
    K2[3] = 1000.0  # garbage in the aliased layer's part: must be ignored
    V2[3] = -1000.0
    c.append(seq, K2, V2, zero_copy=zero_copy)
    Kall, Vall = np.concatenate([K, K2], axis=2), np.concatenate([V, V2], axis=2)
    assert_layer_reads(c, seq, {3: 1}, Kall, Vall)
    st = c.stats(seq).sequence
    assert st.length == N + 12 and st.aliased_layers == 1
    # only the owning layers grew: 40 → 52 tokens is 5 → 7 pages per head of layers 0..2
    assert st.pages == pages + (L - 1) * H * (-(-(N + 12) // PT) - N // PT)
    assert st.tokens_held == (L - 1) * H * (N + 12)
    c.release(seq)


@pytest.mark.parametrize("maps,want", [
    (["2:1", "3:2"], {2: 1, 3: 1}),
    (["2:1,3:2"], {2: 1, 3: 1}),
    (["3:2,2:1"], {2: 1, 3: 1}),
    (["3:2", "2:1"], {2: 1, 3: 1}),   # the earlier alias follows its owner to layer 1
    (["1:0", "3:1", "2:1"], {1: 0, 2: 0, 3: 0}),
    (["2:1", "2:1"], {2: 1}),          # re-applying the same alias changes nothing
], ids=lambda x: "+".join(x) if isinstance(x, list) else None)
def test_alias_chains(c, maps, want):
    K, V = layered_kv(43)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    for m in maps:
        r = c.compact(seq, "kvsharer", alias_map=m)
    assert dict(aliases_of(r)) == want
    assert c.stats(seq).sequence.aliased_layers == len(want)
    assert c.stats(seq).sequence.pages == (L - len(want)) * H * -(-N // PT)
    assert_layer_reads(c, seq, want, K, V, modes=("inline", "pages"))
    c.release(seq)


@pytest.mark.parametrize("first,alias_map", [
    (None, "4:1"), (None, "3:9"), (None, "2:2"), (None, "1:3"), (None, "0:0"),
    (None, "3:1,3:2"), (None, "3:1,3:1"), (None, "3-1"), (None, "a:b"), (None, "3:"),
    (None, "-1:0"), (None, "3:1:0"), (None, ""), (None, " , "), (None, "3:1,2:x"),
    ("3:1", "3:2"),  # layer 3 already aliases 1
    ("3:1", "2:3"),  # owner later than the layer (3 aliases 1, still later)
], ids=lambda x: repr(x))
def test_alias_rules(c, first, alias_map):
    K, V = layered_kv(44)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    if first is not None:
        c.compact(seq, "kvsharer", alias_map=first)
    before = sequence_snapshot(c, seq)
    free = c.stats().free_pages
    with pytest.raises(KvdError) as e:
        c.compact(seq, "kvsharer", alias_map=alias_map)
    assert e.value.code == ErrorCode.INVALID_ARGUMENT, e.value
    assert sequence_snapshot(c, seq) == before
    assert c.stats().free_pages == free
    c.release(seq)


def test_compaction_after_alias(c):
    """SnapKV and BalanceKV on an aliased sequence compact the owning layers; aliased layers still
    read their owner (now compacted)."""
    K, V = layered_kv(45, n=80)
    rng = np.random.default_rng(7)
    Q = rng.standard_normal((L, HQ, 8, D)).astype(np.float32)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=80)
    c.compact(seq, "kvsharer", alias_map="3:1")
    r = c.compact(seq, "snapkv", queries=Q, budget=10)
    assert aliases_of(r) == [(3, 1)]
    q = heads_by_layer(c, seq)
    budgets, kept, scores = ref.reference("snapkv", K[:3].astype(float), Q[:3].astype(float), budget=10)
    for l in range(L):
        for h in range(H):
            o = 1 if l == 3 else l
            hd = q[(l, h)]
            ref.check_topk(hd.positions, scores[o * H + h], 10, 8, 80, f"layer {l} head {h}")
            assert_bits_equal(hd.keys, K[o, h][hd.positions], f"K layer {l}")
    r = c.compact(seq, "balancekv", sinks=2, recent=2, itrs=1, block=8)
    q2 = heads_by_layer(c, seq)
    assert all(q2[(3, h)].positions.tolist() == q2[(1, h)].positions.tolist() for h in range(H))
    assert all(q2[(l, h)].num_tokens == 2 + 7 + 2 for l in range(L) for h in range(H))
    c.release(seq)


# Hand-worked budgets after "3:1" on a 42-token prefix (50 tokens, window 8): B and the allocators
# count only layers 0–2, which hold a cache. fraction 0.5 → B = 0.5·42 = 21 (counting layer 3's
# empty heads gave 0.5·31.5 → 16); pyramidkv's β = 20 line over 3 layers: 40.95, 21, 1.05 → 41, 21, 1
# (before: 31, 21, 11, 1 over 4 layers, layer 3's lost).
AFTER_ALIAS = {
    ("snapkv", ("fraction", 0.5)): [21] * 6 + [0, 0],
    ("pyramidkv", ("fraction", 0.5)): [41, 41, 21, 21, 1, 1, 0, 0],
}


@pytest.mark.parametrize("budget_case", [("fraction", 0.5), ("budget", 10)], ids=lambda b: f"{b[0]}={b[1]}")
@pytest.mark.parametrize("method", ["snapkv", "pyramidkv", "adakv", "headkv"])
def test_budgets_after_alias_go_to_held_layers(daemon, c, method, budget_case):
    """After KVSharer aliased layer 3, a budgeted method spreads L'·H·B over the 3 layers that hold
    a cache (B from their prefixes alone) and gives the aliased heads 0; budgets and kept sets match
    the NumPy reference run with ``aliased={3}``, and layer 3 still reads layer 1's kept tokens."""
    n, w = 50, 8
    K, V = layered_kv(48, n=n)
    Q = np.random.default_rng(9).standard_normal((L, HQ, w, D)).astype(np.float32)
    name, value = budget_case
    kw, rk = {name: value, "queries": Q}, {name: value}
    if method == "headkv":
        # Layer 3 is the most important on file: aliased, it must get nothing all the same.
        table = {f"{l}-{h}": [0.1 + 0.2 * l + 0.05 * h, 0.3] for l in range(L) for h in range(H)}
        (daemon.workdir / "alias-headscores.json").write_text(json.dumps(table))
        kw["scores"] = "alias-headscores.json"
        rk["scores_table"] = table
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=n)
    try:
        c.compact(seq, "kvsharer", alias_map="3:1")
        r = c.compact(seq, method, **kw)
        assert aliases_of(r) == [(3, 1)]
        heads = [K[l, h].astype(float) if l != 3 else np.zeros((0, D)) for l in range(L) for h in range(H)]
        budgets, _, scores = ref.reference(method, heads, Q.astype(float), layers=L, aliased={3}, **rk)
        got = list(r.budgets)
        B = ref.average_budget(rk.get("budget", 128), rk.get("fraction", 0.0), [n - w] * (3 * H))
        if method == "adakv":
            # The layer-wide cut may fall between float32 near-ties: any admissible hits vector.
            for l in range(3):
                sl = slice(l * H, (l + 1) * H)
                allowed = [ref.adakv_budgets_from_hits(hh, B, 0.2, [n - w] * H)
                           for hh in ref.adakv_admissible_hits(scores[sl], B)]
                assert got[sl] in allowed, f"adakv layer {l}: {got[sl]} not in {allowed}"
            assert got[3 * H:] == [0] * H
        else:
            assert got == budgets, f"{method}: budgets {got} != reference {budgets}"
        if (method, budget_case) in AFTER_ALIAS:
            assert got == AFTER_ALIAS[(method, budget_case)]
        assert sum(got) == 3 * H * B, f"{method}: Σ budgets {sum(got)} != L'·H·B = {3 * H * B}"
        q = heads_by_layer(c, seq)
        for l in range(L):
            for h in range(H):
                o = 1 if l == 3 else l
                pos = q[(l, h)].positions.astype(np.int64)
                ref.check_topk(pos, scores[o * H + h], got[o * H + h], w, n, f"{method} layer {l} head {h}")
                assert_bits_equal(q[(l, h)].keys, K[o, h][pos], f"K layer {l} head {h}")
    finally:
        c.release(seq)


# ---------------------------------------------------------------------------------------------
# Policies

def test_snapkv_and_kvsharer_in_one_request(c):
    K, V = layered_kv(46)
    Q = np.random.default_rng(8).standard_normal((L, HQ, 8, D)).astype(np.float32)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    free0 = c.stats().free_pages
    r = c.compact(seq, policy="snap_share", queries=Q)
    assert r.policy == "snap_share"
    assert aliases_of(r) == [(3, 1)]
    assert list(r.budgets) == [6] * (L * H)
    st = c.stats(seq).sequence
    assert st.aliased_layers == 1
    assert st.pages == (L - 1) * H * 2  # 6 + 8 tokens kept per head: 2 pages
    assert c.stats().free_pages == free0 + L * H * 5 - st.pages
    assert r.pages_freed == L * H * 5 - st.pages
    budgets, kept, scores = ref.reference("snapkv", K.astype(float), Q.astype(float), budget=6)
    q = heads_by_layer(c, seq)
    for l in range(L):
        for h in range(H):
            o = 1 if l == 3 else l
            ref.check_topk(q[(l, h)].positions, scores[o * H + h], 6, 8, N, f"layer {l} head {h}")
            assert_bits_equal(q[(l, h)].keys, K[o, h][q[(l, h)].positions], f"K layer {l}")
            assert_bits_equal(q[(l, h)].values, V[o, h][q[(l, h)].positions], f"V layer {l}")
    c.release(seq)


def test_sharer_only_policy_and_override(c):
    K, V = layered_kv(47)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=40)
    r = c.compact(seq, policy="share_only")
    assert aliases_of(r) == [(2, 0)]
    r = c.compact(seq, policy="share_only", alias_map="3:2")  # request overrides the map
    assert aliases_of(r) == [(2, 0), (3, 0)]
    assert_layer_reads(c, seq, {2: 0, 3: 0}, K, V, modes=("inline",))
    c.release(seq)
