"""kvd's compaction methods against an independent NumPy reference (Tests/e2e/reference.py).

For every built-in method, on a GQA model (3 layers × 2 KV heads × 4 query heads, head_dim 16,
4 tokens per page) in f32 and f16: the kept positions per head, the budgets kvd reports, the kept
K/V bytes and the pages freed must match the reference. Two kinds of data:

- ``planted``: random K/V with a few heavy hitters per head (keys aligned with the queries' common
  direction). kvd scores in float32, the reference in float64: tokens whose scores are within
  1e-5 (relative) of the cut may be swapped (``reference.check_topk``).
- ``ties``: every key of a head is the same integer vector and the queries are integers, so every
  logit is exact in float32 and the scores tie exactly in kvd too: ties must go to lower positions
  (and, for AdaKV's layer-wide top-k, to the lower head), with no tolerance at all.

Plus the host's plan checks (docs/PROTOCOL.md, "Compaction") as a table: budgets add up, the window is
kept, positions are sorted and unique, nothing is dropped when the budget covers the prefix, and
the same request on two identical sequences gives the same result.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

import reference as ref
from conftest import (DTYPES, GQA, GQA_MODELS, MODEL_BF16, MODEL_GQA_F16, MODEL_GQA_F32, MODEL_WIDE,
                      TINY, assert_bits_equal, fill_sequence)

L, H, HQ, D, P = GQA["layers"], GQA["kv_heads"], GQA["q_heads"], GQA["head_dim"], GQA["page_tokens"]
G = HQ // H
N = 50  # tokens per head (not a page multiple: the last page is partly used)
W = 8  # observation window
PREFIX = N - W
MODELS = [MODEL_GQA_F32, MODEL_GQA_F16]
METHODS = ["streamingllm", "knorm", "snapkv", "h2o", "pyramidkv", "adakv", "headkv"]
# (param name, value): two budgets (6 and 10: PyramidKV's β = 20 makes 10 an exact largest-
# remainder tie between layers 0 and 2) and a fraction (0.33 × 42 = 13.86 → 14).
BUDGETS = [("budget", 6), ("budget", 10), ("fraction", 0.33)]
# StreamingLLM has no budget; the same three cases as (sinks, recent).
STREAMING = {("budget", 6): (2, 6), ("budget", 10): (4, 10), ("fraction", 0.33): (0, 13)}


def pages_for(n: int) -> int:
    return -(-n // P)


# ---------------------------------------------------------------------------------------------
# Data

def planted_data(model: str, seed: int, n: int = N, w: int = W):
    """Random K/V with 4 heavy hitters per head (see reference.planted_data)."""
    return ref.planted_data(seed, L, H, HQ, D, n, w, GQA_MODELS[model])


def tie_data(model: str, seed: int, n: int = N, w: int = W):
    """Equal integer keys per head, integer queries: exact ties (see reference.tie_data)."""
    return ref.tie_data(seed, L, H, HQ, D, n, w, GQA_MODELS[model])


DATA = {"planted": planted_data, "ties": tie_data}


def random_head_scores(rng, layers: int, heads: int, equal_pair: bool = True) -> dict:
    """A head-score table {"l-h": [scores]} with lists of varying length; two heads get the same
    list so their importances tie exactly."""
    table = {f"{l}-{h}": [round(float(x), 4) for x in rng.uniform(0.01, 1.0, rng.integers(2, 7))]
             for l in range(layers) for h in range(heads)}
    if equal_pair:
        table["0-1"] = list(table["1-0"])
    return table


@pytest.fixture(scope="module")
def score_files(gqa_daemon):
    """Head-score JSON files: per KV head ("kv") and per query head ("q"), as (name, table). A
    request names a file relative to files.directories, which defaults to the config file's
    directory: the files go there."""
    d = gqa_daemon.workdir / "headscores"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    out = {}
    for name, heads in (("kv", H), ("q", HQ)):
        table = random_head_scores(rng, L, heads)
        (d / f"scores-{name}.json").write_text(json.dumps(table))
        out[name] = (f"headscores/scores-{name}.json", table)
    zero = {f"{l}-{h}": [0.0, 0.0] for l in range(L) for h in range(H)}  # no importance at all
    (d / "scores-zero.json").write_text(json.dumps(zero))
    out["zero"] = ("headscores/scores-zero.json", zero)
    return out


# ---------------------------------------------------------------------------------------------
# One compaction, checked

def request_for(method: str, budget_case, Q, score_file=None, extra=None):
    """(compact kwargs, reference kwargs) for a method and a budget case."""
    name, value = budget_case
    if method == "streamingllm":
        sinks, recent = STREAMING[budget_case]
        return dict(sinks=sinks, recent=recent), dict(sinks=sinks, recent=recent)
    kw = {name: value}
    rk = {name: value}
    if method == "knorm":
        kw["window"] = W
        rk["window"] = W
    else:
        kw["queries"] = Q
        rk["Q"] = Q.astype(np.float64)
    if method == "headkv":
        path, table = score_file
        kw["scores"] = path
        rk["scores_table"] = table
        rk["q_heads"] = HQ
    for k, v in (extra or {}).items():
        kw[k] = v
        rk[k] = v
    return kw, rk


def check_adakv_budgets(got, budgets, scores, B, floor, prefix, exact):
    """kvd's AdaKV budgets equal the reference's, or (planted data) those of another resolution of
    near-ties at the layer-wide cut, which float32 scores may order either way."""
    for l in range(L):
        sl = slice(l * H, (l + 1) * H)
        layer = scores[sl]
        options = [ref.adakv_hits(layer, B)] if exact else ref.adakv_admissible_hits(layer, B)
        allowed = [ref.adakv_budgets_from_hits(hh, B, floor, prefix[sl]) for hh in options]
        assert got[sl] in allowed, (f"adakv layer {l}: budgets {got[sl]}, reference {budgets[sl]} "
                                    f"(admissible: {allowed})")


def check_compaction(c, model, K, V, method, kw, rk, exact: bool):
    """Compacts a fresh sequence holding K/V with ``method`` and checks everything against the
    reference; returns (response, per-head kept positions)."""
    K64 = K.astype(np.float64)
    seq = fill_sequence(c, model, K, V)
    try:
        free_before = c.stats().free_pages
        st = c.stats(seq).sequence
        assert st.pages == L * H * pages_for(N)
        r = c.compact(seq, method, **kw)
        ref_q = rk.pop("Q", None)
        budgets, kept_ref, scores = ref.reference(method, K64, ref_q, **rk)
        w = ref_q.shape[2] if ref_q is not None else rk.get("window", 0)
        rtol = 0.0 if exact else ref.NEAR_TIE_RTOL

        assert r.method == method and r.policy == "" and r.chosen_by == "request"
        got_budgets = list(r.budgets)
        if method == "streamingllm":
            pass  # no budgets (checked on their own in test_streamingllm_reports_no_budgets)
        elif method == "adakv":
            B = ref.average_budget(rk.get("budget", 128), rk.get("fraction", 0.0), [N - w] * (L * H))
            check_adakv_budgets(got_budgets, budgets, scores, B, rk.get("floor", 0.2),
                                [N - w] * (L * H), exact)
        else:
            assert got_budgets == budgets, f"{method}: budgets {got_budgets} != reference {budgets}"

        q = c.query(seq)
        assert [(h.layer, h.head) for h in q] == [(l, h) for l in range(L) for h in range(H)]
        kept = []
        for i, hd in enumerate(q):
            what = f"{method} {model} layer {hd.layer} head {hd.head}"
            pos = hd.positions.astype(np.int64)
            if method == "streamingllm":
                assert pos.tolist() == kept_ref[i].tolist(), what
            else:
                # AdaKV: the kept set given kvd's own (admissible) budget.
                b = got_budgets[i] if method == "adakv" else budgets[i]
                ref.check_topk(pos, scores[i], b, w, N, what, rtol=rtol)
                if exact:
                    assert pos.tolist() == ref.topk(scores[i], b, w, N).tolist(), what
            assert_bits_equal(hd.keys, K[hd.layer, hd.head, pos], f"{what} K")
            assert_bits_equal(hd.values, V[hd.layer, hd.head, pos], f"{what} V")
            assert hd.log_weights.tolist() == [0.0] * len(pos), what
            kept.append(pos)

        assert [(h.layer, h.head, h.before, h.kept) for h in r.heads] == [
            (i // H, i % H, N, len(kept[i])) for i in range(L * H)]
        want_pages = sum(pages_for(len(k)) for k in kept)
        want_freed = L * H * pages_for(N) - want_pages
        st = c.stats(seq).sequence
        assert st.pages == want_pages, f"Stats pages {st.pages} != Σ ceil(kept/{P}) = {want_pages}"
        assert st.tokens_held == sum(len(k) for k in kept)
        assert r.pages_freed == want_freed
        assert c.stats().free_pages - free_before == want_freed
        return r, kept
    finally:
        c.release(seq)


# ---------------------------------------------------------------------------------------------
# 1. Reference agreement

@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("budget_case", BUDGETS, ids=lambda b: f"{b[0]}={b[1]}")
@pytest.mark.parametrize("method", METHODS)
def test_method_matches_reference(gqa_client, score_files, method, budget_case, model, data):
    K, V, Q = DATA[data](model, seed=zlib.crc32(f"{method}/{model}/{data}".encode()) % 1000)
    kw, rk = request_for(method, budget_case, Q, score_files["kv"])
    check_compaction(gqa_client, model, K, V, method, kw, rk, exact=(data == "ties"))


@pytest.mark.parametrize("aggregate", ["mean", "max"])
@pytest.mark.parametrize("model", MODELS)
def test_headkv_per_query_head_scores(gqa_client, score_files, model, aggregate):
    """A score file per query head: a KV head's importance is the mean (max) over its group."""
    K, V, Q = planted_data(model, seed=11)
    kw, rk = request_for("headkv", ("budget", 10), Q, score_files["q"],
                         extra=dict(aggregate=aggregate))
    check_compaction(gqa_client, model, K, V, "headkv", kw, rk, exact=False)


@pytest.mark.parametrize("params", [
    dict(pooling="max", kernel=3), dict(pooling="none"), dict(pooling="avg", kernel=7),
    dict(kernel=1)], ids=str)
def test_snapkv_pooling_params(gqa_client, params):
    K, V, Q = planted_data(MODEL_GQA_F32, seed=21)
    kw, rk = request_for("snapkv", ("budget", 8), Q, extra=params)
    check_compaction(gqa_client, MODEL_GQA_F32, K, V, "snapkv", kw, rk, exact=False)


@pytest.mark.parametrize("method, extra", [
    ("pyramidkv", dict(beta=4.0)), ("pyramidkv", dict(beta=1.0)), ("adakv", dict(floor=0.5)),
    ("adakv", dict(floor=0.0)), ("headkv", dict(beta=2.0, temperature=2.0)),
    ("headkv", dict(beta=1.5, pooling="avg", kernel=5))], ids=str)
def test_allocator_params(gqa_client, score_files, method, extra):
    K, V, Q = planted_data(MODEL_GQA_F32, seed=31)
    kw, rk = request_for(method, ("budget", 12), Q, score_files["kv"], extra=extra)
    check_compaction(gqa_client, MODEL_GQA_F32, K, V, method, kw, rk, exact=False)


def test_adakv_ties_go_to_lower_head(gqa_client):
    """All heads of a layer score identically (equal keys): the layer's top-(H·B) takes head 0's
    tokens first, so head 0 gets the larger budget."""
    K, V, Q = tie_data(MODEL_GQA_F32, seed=3)
    r, kept = check_compaction(gqa_client, MODEL_GQA_F32, K, V, "adakv", dict(queries=Q, budget=6),
                               dict(Q=Q.astype(np.float64), budget=6), exact=True)
    # hits = [12, 0]: weights 12·0.8 + 1.2 = 10.8 and 1.2 → largest remainder → [11, 1]
    assert list(r.budgets) == [11, 1] * L


def test_adakv_pools_like_the_adakv_code(gqa_client):
    """AdaKV's default scores are max-pooled with kernel 7, as in the AdaKV code
    (AdaptiveSnapKVCluster; its LongBench configs c*_w32_k7_maxpool): Hello says so, and a request
    without pooling parameters matches the NumPy reference run with max/7 (here the avg/5 reference
    keeps other tokens, so the check tells the two apart)."""
    params = {p.name: p.default_value for m in gqa_client.hello().methods if m.name == "adakv"
              for p in m.params}
    assert (params["pooling"], params["kernel"]) == ("max", "7")
    K, V, Q = planted_data(MODEL_GQA_F32, seed=33)
    kw, rk = request_for("adakv", ("budget", 9), Q)
    _, kept = check_compaction(gqa_client, MODEL_GQA_F32, K, V, "adakv", kw,
                               dict(rk, pooling="max", kernel=7), exact=False)
    _, kept_avg, _ = ref.reference("adakv", K.astype(np.float64), Q.astype(np.float64), budget=9,
                                   pooling="avg", kernel=5)
    assert any(a.tolist() != b.tolist() for a, b in zip(kept, kept_avg))


def test_pyramid_top_clamped_to_the_prefix(gqa_client):
    """B = 30, β = 20 on a 42-token prefix (3 layers): max = 2·30 − 1.5 = 58.5 ≥ 42, so as in
    PyramidKV's released code the top becomes 42 and the bottom 2·30 − 42 = 18: budgets 42, 30, 18
    (Σ over the layers = 3·30). Without the clamp: 59, 30, 1, of which layer 0 can keep only 42."""
    K, V, Q = planted_data(MODEL_GQA_F32, seed=34)
    r, kept = check_compaction(gqa_client, MODEL_GQA_F32, K, V, "pyramidkv",
                               dict(queries=Q, budget=30), dict(Q=Q.astype(np.float64), budget=30),
                               exact=False)
    assert list(r.budgets) == [42, 42, 30, 30, 18, 18]
    assert [len(k) - W for k in kept] == [42, 42, 30, 30, 18, 18]


def test_streamingllm_reports_no_budgets(gqa_client):
    """compact.proto: CompactResponse.budgets is "empty for methods without budgets, e.g.
    streamingllm"."""
    K, V, _ = planted_data(MODEL_GQA_F32, seed=1)
    seq = fill_sequence(gqa_client, MODEL_GQA_F32, K, V)
    try:
        r = gqa_client.compact(seq, "streamingllm", sinks=2, recent=8)
        assert list(r.budgets) == [], f"streamingllm reported budgets {list(r.budgets)}"
    finally:
        gqa_client.release(seq)


@pytest.mark.parametrize("budget_case", [("fraction", 0.5), ("budget", 7)], ids=lambda b: f"{b[0]}={b[1]}")
@pytest.mark.parametrize("method", ["knorm", "snapkv", "h2o", "pyramidkv", "adakv", "headkv"])
def test_second_compaction_on_uneven_heads(gqa_client, score_files, method, budget_case):
    """After a HeadKV compaction the heads hold different counts; 6 more tokens are appended, then a
    second compaction scores each head's current tokens (window at the end of each head, causal by
    index within the head; ``fraction`` of the mean prefix over heads; AdaKV capped per head)."""
    c = gqa_client
    model = MODEL_GQA_F32
    K, V, Q = planted_data(model, seed=41)
    K2, V2, Q2 = planted_data(model, seed=42, n=10, w=W)
    K2, V2 = K2[:, :, :6], V2[:, :, :6]
    seq = fill_sequence(c, model, K, V)
    try:
        c.compact(seq, "headkv", queries=Q, budget=10, scores=score_files["kv"][0])
        c.append(seq, K2, V2)
        allK = np.concatenate([K, K2], axis=2)
        allV = np.concatenate([V, V2], axis=2)
        cur = [h.positions.astype(np.int64) for h in c.query(seq, mode="metadata")]
        counts = [len(p) for p in cur]
        assert len(set(counts)) > 1, f"heads should hold different counts: {counts}"
        heads = [allK[i // H, i % H, cur[i]].astype(np.float64) for i in range(L * H)]

        name, value = budget_case
        kw = {name: value}
        rk = dict(kw)
        if method == "knorm":
            kw["window"] = rk["window"] = 5
        else:
            kw["queries"] = Q2
        if method == "headkv":
            kw["scores"] = score_files["kv"][0]
            rk["scores_table"] = score_files["kv"][1]
        w = 5 if method == "knorm" else W
        budgets, kept, scores = ref.reference(method, heads, Q2.astype(np.float64) if
                                              method != "knorm" else None, layers=L, **rk)
        free_before = c.stats().free_pages
        r = c.compact(seq, method, **kw)
        got_budgets = list(r.budgets)
        prefix = [n - w for n in counts]
        if method == "adakv":
            B = ref.average_budget(rk.get("budget", 128), rk.get("fraction", 0.0), prefix)
            check_adakv_budgets(got_budgets, budgets, scores, B, 0.2, prefix, exact=False)
            assert all(b <= p for b, p in zip(got_budgets, prefix))
        else:
            assert got_budgets == budgets, f"budgets {got_budgets} != reference {budgets}"
        q = c.query(seq)
        for i, hd in enumerate(q):
            pos = hd.positions.astype(np.int64)
            idx = np.searchsorted(cur[i], pos)
            assert np.array_equal(cur[i][np.minimum(idx, counts[i] - 1)], pos), "unknown position"
            ref.check_topk(idx, scores[i], got_budgets[i], w, counts[i], f"{method} head {i}")
            assert_bits_equal(hd.keys, allK[hd.layer, hd.head, pos], f"head {i} K")
            assert_bits_equal(hd.values, allV[hd.layer, hd.head, pos], f"head {i} V")
        assert [(h.before, h.kept) for h in r.heads] == [
            (counts[i], len(q[(i // H, i % H)].positions)) for i in range(L * H)]
        freed = sum(pages_for(n) - pages_for(h.kept) for n, h in zip(counts, r.heads))
        assert r.pages_freed == freed == c.stats().free_pages - free_before
    finally:
        c.release(seq)


EDGES = [
    ("snapkv", ("budget", 0), {}), ("pyramidkv", ("budget", 0), {}), ("adakv", ("budget", 0), {}),
    ("headkv", ("budget", 0), {}), ("knorm", ("budget", 0), {}),
    ("snapkv", ("fraction", 1.0), {}), ("adakv", ("fraction", 1.0), {}),
    ("snapkv", ("budget", 9), dict(kernel=255)), ("headkv", ("budget", 9), dict(kernel=99)),
    ("adakv", ("budget", 9), dict(floor=1.0)), ("pyramidkv", ("budget", 9), dict(beta=1e6)),
    ("headkv", ("budget", 9), dict(beta=1000.0)), ("headkv", ("budget", 40), dict(beta=1.001)),
    ("adakv", ("budget", 30), {}), ("pyramidkv", ("budget", 41), {}),
]


@pytest.mark.parametrize("method, budget_case, extra", EDGES, ids=str)
def test_edge_cases(gqa_client, score_files, method, budget_case, extra):
    K, V, Q = planted_data(MODEL_GQA_F16, seed=61)
    kw, rk = request_for(method, budget_case, Q, score_files["kv"], extra=extra)
    check_compaction(gqa_client, MODEL_GQA_F16, K, V, method, kw, rk, exact=False)


@pytest.mark.parametrize("method", ["snapkv", "adakv", "headkv", "pyramidkv"])
def test_window_covers_the_whole_cache(gqa_client, score_files, method):
    """N observation queries: every token is in the window, nothing is scored or dropped."""
    K, V, Q = planted_data(MODEL_GQA_F32, seed=62, w=N)
    kw, rk = request_for(method, ("budget", 4), Q, score_files["kv"])
    r, kept = check_compaction(gqa_client, MODEL_GQA_F32, K, V, method, kw, rk, exact=True)
    assert all(len(k) == N for k in kept) and r.pages_freed == 0


def test_headkv_without_importance_spreads_evenly(gqa_client, score_files):
    K, V, Q = planted_data(MODEL_GQA_F32, seed=63)
    kw, rk = request_for("headkv", ("budget", 10), Q, score_files["zero"])
    r, _ = check_compaction(gqa_client, MODEL_GQA_F32, K, V, "headkv", kw, rk, exact=False)
    # pool 9·6 = 54 spread evenly: 9 each, + floor 1
    assert list(r.budgets) == [10] * (L * H)


@pytest.mark.parametrize("method", ["snapkv", "pyramidkv", "adakv", "h2o", "knorm"])
@pytest.mark.parametrize("model", [MODEL_BF16, MODEL_WIDE])
def test_other_layouts(gqa_client, model, method):
    """Two more layouts: tiny-bf16 (2 layers: the pyramid is just max and min) and wide-f32
    (1 layer, 1 head, head_dim 64: PyramidKV gives B, AdaKV has one head)."""
    c = gqa_client
    layout = dict(TINY) if model == MODEL_BF16 else dict(layers=1, kv_heads=1, q_heads=1,
                                                         head_dim=64, page_tokens=8)
    Lm, Hm, Hqm, Dm = layout["layers"], layout["kv_heads"], layout["q_heads"], layout["head_dim"]
    n, w, B = 30, 5, 7
    K, V, Q = ref.planted_data(71, Lm, Hm, Hqm, Dm, n, w, DTYPES[model])
    seq = fill_sequence(c, model, K, V, chunk=15)
    try:
        kw = dict(window=w) if method == "knorm" else dict(queries=Q)
        r = c.compact(seq, method, budget=B, **kw)
        budgets, kept, scores = ref.reference(
            method, K.astype(np.float64), None if method == "knorm" else Q.astype(np.float64),
            budget=B, window=w)
        if method == "adakv":
            hits = [ref.adakv_hits(scores[l * Hm:(l + 1) * Hm], B) for l in range(Lm)]
            assert all(sum(hh) == Hm * B for hh in hits)
        assert list(r.budgets) == budgets
        if method == "pyramidkv":
            # B = 7, β = 20: min 0.35, max 13.65 → largest remainder → 14 and 0
            assert budgets == ([B] if Lm == 1 else [14, 14, 0, 0])
        for i, hd in enumerate(c.query(seq)):
            ref.check_topk(hd.positions, scores[i], budgets[i], w, n, f"{model} {method} head {i}")
            assert_bits_equal(hd.keys, K[hd.layer, hd.head, hd.positions.astype(int)], "K")
    finally:
        c.release(seq)


def test_window_is_the_number_of_queries(gqa_client):
    """With queries, w is their count whatever the ``window`` parameter says; knorm too keeps the
    last w tokens when queries are sent."""
    c = gqa_client
    K, V, Q = planted_data(MODEL_GQA_F32, seed=51)
    for method, kw in (("snapkv", dict(window=3)), ("knorm", {})):
        seq = fill_sequence(c, MODEL_GQA_F32, K, V)
        try:
            c.compact(seq, method, queries=Q, budget=5, **kw)
            rk = dict(window=W) if method == "knorm" else dict(Q=Q.astype(np.float64))
            budgets, kept, scores = ref.reference(method, K.astype(np.float64), rk.pop("Q", None),
                                                  budget=5, **rk)
            for i, hd in enumerate(c.query(seq, mode="metadata")):
                ref.check_topk(hd.positions, scores[i], 5, W, N, f"{method} head {i}")
        finally:
            c.release(seq)


# ---------------------------------------------------------------------------------------------
# 2. Checks every method must pass

SMALL, LARGE = 5, 1000  # LARGE ≥ the 42-token prefix


def _request(method, size, Q, score_file):
    if method == "streamingllm":
        return dict(sinks=2, recent=8) if size == SMALL else dict(sinks=4, recent=64)
    kw = dict(budget=size)
    if method == "knorm":
        kw["window"] = W
    else:
        kw["queries"] = Q
    if method == "headkv":
        kw["scores"] = score_file[0]
    return kw


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "ge_prefix"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_checks(gqa_client, score_files, method, size):
    c = gqa_client
    model = MODEL_GQA_F16
    K, V, Q = planted_data(model, seed=77)
    kw = _request(method, size, Q, score_files["kv"])
    seqs = [fill_sequence(c, model, K, V) for _ in range(2)]
    try:
        results = []
        for seq in seqs:
            r = c.compact(seq, method, **kw)
            q = c.query(seq)
            results.append((r, [(h.positions.tolist(), h.keys.tobytes(), h.values.tobytes())
                                for h in q]))
        (r, heads), (r2, heads2) = results
        # deterministic
        assert list(r.budgets) == list(r2.budgets)
        assert [(h.before, h.kept) for h in r.heads] == [(h.before, h.kept) for h in r2.heads]
        assert heads == heads2, "the same request on identical sequences kept different tokens"
        assert r.pages_freed == r2.pages_freed

        w = 8 if method != "streamingllm" else kw["recent"]
        sinks = kw.get("sinks", 0)
        budgets = list(r.budgets)
        for i, (pos, _, _) in enumerate(heads):
            what = f"{method} head {i}"
            assert pos == sorted(set(pos)), f"{what}: positions not sorted and unique"
            assert all(0 <= p < N for p in pos), what
            if N <= w + sinks:
                assert pos == list(range(N)), what
                continue
            assert pos[len(pos) - w:] == list(range(N - w, N)), f"{what}: window not kept"
            assert pos[:sinks] == list(range(sinks)), f"{what}: sinks not kept"
            if method != "streamingllm":
                b = budgets[i]
                assert len(pos) == min(b, N - w) + w, f"{what}: kept {len(pos)}, budget {b}"
                if b >= N - w:
                    assert pos == list(range(N)), f"{what}: budget {b} ≥ prefix but tokens dropped"
        if method == "streamingllm":
            return
        assert len(budgets) == L * H
        if method == "adakv":
            # a layer's heads share H·B (each capped at its prefix)
            for l in range(L):
                layer = budgets[l * H:(l + 1) * H]
                assert sum(layer) == min(H * size, H * (N - w)), f"adakv layer {l}: {layer}"
        else:
            assert sum(budgets) == L * H * size, f"{method}: Σ budgets {sum(budgets)} != {L * H * size}"
        if size == LARGE and method not in ("headkv",):
            assert all(len(p) == N for p, _, _ in heads), f"{method}: dropped tokens at budget {size}"
    finally:
        for seq in seqs:
            c.release(seq)
