"""Policies, rules, SIGHUP reload, observation queries in shared memory, and bad compaction input.

A policy (config ``policies:``) is a method or a scorer/allocator composition with parameters; a
request names it with ``policy=`` and may override its parameters. Without a method or policy,
the first matching rule (``rules:``), then the model's ``default_policy``, then its
``default_method`` decide; ``CompactResponse.chosen_by`` says which. SIGHUP reloads policies and
rules without touching sequences; a broken file keeps the old ones. Every bad request is refused
with its error code and leaves the sequence bit-exact.
"""

from __future__ import annotations

import json
import signal
import time

import ml_dtypes
import numpy as np
import pytest

import reference as ref
from conftest import (GQA, GQA_MODELS, MODEL_F32, MODEL_GQA_F16, MODEL_GQA_F32, ErrorCode,
                      KvdError, add_gqa_models, assert_bits_equal, fill_sequence, to_yaml)
from kvd.client import _tensor
from kvd.v1 import compact_pb2

L, H, HQ, D, P = GQA["layers"], GQA["kv_heads"], GQA["q_heads"], GQA["head_dim"], GQA["page_tokens"]
N, W = 50, 8


def data(model=MODEL_GQA_F32, seed=0, n=N, w=W):
    return ref.planted_data(seed, L, H, HQ, D, n, w, GQA_MODELS[model])


def snapshot(c, seq):
    """Everything a query and the sequence stats show, as bytes (for bit-exact comparisons)."""
    q = c.query(seq, mode="inline", copy=True)
    st = c.stats(seq).sequence
    return (q.generation, q.length, st.pages, st.tokens_held,
            [(h.layer, h.head, h.positions.tobytes(), h.log_weights.tobytes(), h.keys.tobytes(),
              h.values.tobytes()) for h in q])


def kept_positions(c, seq):
    return [h.positions.tolist() for h in c.query(seq, mode="metadata")]


def hello_policies(c):
    return {p.name: (p.method, sorted(p.params)) for p in c.hello().policies}


def wait_for(pred, timeout=5.0, what=""):
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def write_scores(path, layers, heads, seed=5):
    rng = np.random.default_rng(seed)
    table = {f"{l}-{h}": [float(x) for x in rng.uniform(0.05, 1, 3)]
             for l in range(layers) for h in range(heads)}
    path.write_text(json.dumps(table))
    return table


def check_against_reference(c, seq, r, budgets, kept_ref, scores, window, exact=False):
    assert list(r.budgets) == budgets, f"budgets {list(r.budgets)} != reference {budgets}"
    for i, hd in enumerate(c.query(seq, mode="metadata")):
        ref.check_topk(hd.positions, scores[i], budgets[i], window, N, f"head {i}",
                       rtol=0.0 if exact else ref.NEAR_TIE_RTOL)


# ---------------------------------------------------------------------------------------------
# Policies from the config

POLICIES = {
    "snap": {"method": "snapkv", "params": {"budget": 6, "pooling": "max", "kernel": 3}},
    "norm_pyramid": {"scorer": "knorm", "allocator": "pyramidkv",
                     "params": {"budget": 8, "window": 4, "beta": 4.0}},
    "h2o_ada": {"scorer": "h2o", "allocator": "adakv", "params": {"budget": 7, "floor": 0.5}},
    "head": {"method": "headkv", "params": {"scores": "scores.json", "budget": 9}},  # relative
    "stream": {"method": "streamingllm", "params": {"sinks": 1, "recent": 5}},
}


@pytest.fixture
def policy_daemon(make_daemon):
    def mutate(cfg):
        add_gqa_models(cfg)
        cfg["policies"] = json.loads(json.dumps(POLICIES))
    d = make_daemon(mutate, start=False)
    d.scores = write_scores(d.workdir / "scores.json", L, H)  # next to the config file
    d.start()
    return d


def test_hello_lists_policies(policy_daemon):
    c = policy_daemon.client()
    got = hello_policies(c)
    assert sorted(got) == sorted(POLICIES)
    assert got["snap"] == ("snapkv", ["budget=6", "kernel=3", "pooling=max"])
    assert got["head"] == ("headkv", ["budget=9", "scores=scores.json"])
    # a composition names its stages (compact.proto's example lists them as "name=value")
    assert sorted(got["norm_pyramid"][0].split()) == ["allocator=pyramidkv", "scorer=knorm"]
    assert got["norm_pyramid"][1] == ["beta=4.0", "budget=8", "window=4"]


def test_policy_method_with_params(policy_daemon):
    c = policy_daemon.client()
    K, V, Q = data(seed=1)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    r = c.compact(seq, policy="snap", queries=Q)
    assert (r.policy, r.chosen_by, r.method) == ("snap", "request", "snapkv")
    budgets, kept, scores = ref.reference("snapkv", K.astype(float), Q.astype(float), budget=6,
                                          pooling="max", kernel=3)
    check_against_reference(c, seq, r, budgets, kept, scores, W)


def test_policy_request_overrides(policy_daemon):
    """Request parameters override the policy's; the policy's others still apply."""
    c = policy_daemon.client()
    K, V, Q = data(seed=2)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    r = c.compact(seq, policy="snap", queries=Q, budget=11, kernel=5)
    assert r.policy == "snap" and r.chosen_by == "request"
    budgets, kept, scores = ref.reference("snapkv", K.astype(float), Q.astype(float), budget=11,
                                          pooling="max", kernel=5)
    check_against_reference(c, seq, r, budgets, kept, scores, W)
    # the override did not stick: the next use of the policy has budget 6 again
    seq2 = fill_sequence(c, MODEL_GQA_F32, K, V)
    assert list(c.compact(seq2, policy="snap", queries=Q).budgets) == [6] * (L * H)


def test_policy_composition_knorm_pyramid(policy_daemon):
    """scorer knorm + allocator pyramidkv: key-norm scores, pyramid budgets (β = 4, B = 8)."""
    c = policy_daemon.client()
    K, V, _ = data(seed=3)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    r = c.compact(seq, policy="norm_pyramid")
    assert r.policy == "norm_pyramid" and r.chosen_by == "request"
    budgets, kept, scores = ref.reference("knorm", K.astype(float), None, budget=8, window=4,
                                          beta=4.0, allocator="pyramidkv")
    assert budgets == [14, 14, 8, 8, 2, 2]  # min 2, max 14
    check_against_reference(c, seq, r, budgets, kept, scores, 4)


def test_policy_composition_h2o_adakv(policy_daemon):
    c = policy_daemon.client()
    K, V, Q = data(seed=4)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    r = c.compact(seq, policy="h2o_ada", queries=Q)
    assert r.policy == "h2o_ada"
    budgets, kept, scores = ref.reference("h2o", K.astype(float), Q.astype(float), budget=7,
                                          floor=0.5, allocator="adakv")
    assert sum(budgets) == L * H * 7
    check_against_reference(c, seq, r, budgets, kept, scores, W)


def test_policy_headkv_relative_score_file(policy_daemon):
    """A relative ``scores`` path in a policy is resolved against the config file's directory."""
    c = policy_daemon.client()
    K, V, Q = data(MODEL_GQA_F16, seed=5)
    seq = fill_sequence(c, MODEL_GQA_F16, K, V)
    r = c.compact(seq, policy="head", queries=Q)
    budgets, kept, scores = ref.reference("headkv", K.astype(float), Q.astype(float), budget=9,
                                          scores_table=policy_daemon.scores, q_heads=HQ)
    assert sum(budgets) == L * H * 9
    check_against_reference(c, seq, r, budgets, kept, scores, W)


def test_policy_score_file_checked_against_the_model(policy_daemon):
    """The "head" policy's score file describes 3 layers × 2 heads: fine for the GQA models, an
    INVALID_ARGUMENT naming the file for the 2-layer tiny model (sequence untouched)."""
    c = policy_daemon.client()
    seq = c.create_sequence(MODEL_F32)
    kt = np.random.default_rng(0).standard_normal((2, 2, 12, 8)).astype(np.float32)
    c.append(seq, kt, kt)
    before = snapshot(c, seq)
    with pytest.raises(KvdError) as e:
        c.compact(seq, policy="head", queries=np.ones((2, 4, 4, 8), np.float32))
    assert e.value.code == ErrorCode.INVALID_ARGUMENT and "scores.json" in str(e.value)
    assert snapshot(c, seq) == before


def test_method_wins_over_policy(policy_daemon):
    c = policy_daemon.client()
    K, V, _ = data(seed=6)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    r = c.compact(seq, "streamingllm", policy="snap", sinks=3, recent=2)
    assert (r.method, r.policy, r.chosen_by) == ("streamingllm", "", "request")
    assert kept_positions(c, seq) == [[0, 1, 2, 48, 49]] * (L * H)


# ---------------------------------------------------------------------------------------------
# Rules and model defaults

def rules_config(cfg):
    add_gqa_models(cfg)
    cfg["arena"]["size_bytes"] = "1MiB"  # ~190 pages of 4 KiB: easy to fill past one half
    cfg["arena"]["staging_bytes"] = "256KiB"
    cfg["policies"] = {
        "long": {"method": "streamingllm", "params": {"sinks": 1, "recent": 4}},
        "full": {"method": "streamingllm", "params": {"sinks": 0, "recent": 3}},
        "dflt": {"method": "streamingllm", "params": {"sinks": 2, "recent": 2}},
    }
    cfg["rules"] = [{"when": {"length_above": 40}, "policy": "long"},
                    {"when": {"arena_used_above": 0.5}, "policy": "full"}]
    for m in cfg["models"]:
        if m["name"] == MODEL_GQA_F32:
            m["default_policy"] = "dflt"


def arena_used(c):
    s = c.stats()
    return (s.total_pages - s.free_pages) / s.total_pages


def test_rules_and_model_defaults(make_daemon):
    d = make_daemon(rules_config)
    c = d.client()
    K, V, _ = data(seed=7)

    # short sequence, arena nearly empty: the model's default policy
    short = fill_sequence(c, MODEL_GQA_F32, K[:, :, :20], V[:, :, :20])
    assert arena_used(c) < 0.5
    r = c.compact(short)
    assert (r.policy, r.chosen_by) == ("dflt", "model default policy")
    assert kept_positions(c, short) == [[0, 1, 18, 19]] * (L * H)

    # longer than 40 tokens: rule 1
    long_ = fill_sequence(c, MODEL_GQA_F32, K[:, :, :44], V[:, :, :44])
    r = c.compact(long_)
    assert r.policy == "long" and r.chosen_by.startswith("rule 1")
    assert "length_above 40" in r.chosen_by
    assert kept_positions(c, long_) == [[0, 40, 41, 42, 43]] * (L * H)

    # a model without default_policy: its default_method (streamingllm, default params)
    tiny = c.create_sequence(MODEL_F32)
    kt = np.zeros((2, 2, 10, 8), np.float32)
    c.append(tiny, kt, kt)
    r = c.compact(tiny)
    assert (r.method, r.policy, r.chosen_by) == ("streamingllm", "", "model default method")

    # fill the arena past one half: rule 2 for a short sequence
    filler = c.create_sequence(MODEL_GQA_F32)
    while arena_used(c) <= 0.5:  # 4 tokens (6 pages) at a time, so just past one half
        c.append(filler, K[:, :, :4], V[:, :, :4])
    short2 = fill_sequence(c, MODEL_GQA_F32, K[:, :, :12], V[:, :, :12])
    assert arena_used(c) > 0.5
    r = c.compact(short2)
    assert r.policy == "full" and r.chosen_by.startswith("rule 2")
    assert "arena_used_above 0.5" in r.chosen_by
    assert kept_positions(c, short2) == [[9, 10, 11]] * (L * H)

    # both rules match: the first wins
    long2 = fill_sequence(c, MODEL_GQA_F32, K[:, :, :44], V[:, :, :44])
    assert arena_used(c) > 0.5
    r = c.compact(long2)
    assert r.policy == "long" and r.chosen_by.startswith("rule 1")

    # a request's policy beats the rules
    short3 = fill_sequence(c, MODEL_GQA_F32, K[:, :, :12], V[:, :, :12])
    r = c.compact(short3, policy="dflt")
    assert (r.policy, r.chosen_by) == ("dflt", "request")

    # freed pages bring the arena back under one half: the model default again
    for s in [filler, long2, short3]:
        c.release(s)
    assert arena_used(c) <= 0.5
    short4 = fill_sequence(c, MODEL_GQA_F32, K[:, :, :12], V[:, :, :12])
    r = c.compact(short4)
    assert (r.policy, r.chosen_by) == ("dflt", "model default policy")


# ---------------------------------------------------------------------------------------------
# SIGHUP

def test_sighup_reloads_policies(make_daemon):
    def mutate(cfg):
        add_gqa_models(cfg)
        cfg["policies"] = {"a": {"method": "streamingllm", "params": {"sinks": 1, "recent": 2}}}
    d = make_daemon(mutate)
    c = d.client()
    K, V, Q = data(seed=8)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    before = snapshot(c, seq)
    assert hello_policies(c) == {"a": ("streamingllm", ["recent=2", "sinks=1"])}

    def rewrite(policies, rules=None, raw=None, page_tokens=None):
        cfg = json.loads(json.dumps(d.config))
        cfg["policies"] = policies
        if rules is not None:
            cfg["rules"] = rules
        if page_tokens is not None:  # a model layout change needs a restart: refused
            cfg["models"][-1]["page_tokens"] = page_tokens
        d.config_path.write_text(raw if raw is not None else to_yaml(cfg) + "\n")
        d.proc.send_signal(signal.SIGHUP)

    rewrite({"b": {"method": "snapkv", "params": {"budget": 5}},
             "c": {"method": "streamingllm", "params": {"sinks": 0, "recent": 1}}},
            rules=[{"when": {"length_above": 10}, "policy": "c"}])
    wait_for(lambda: sorted(hello_policies(c)) == ["b", "c"], what="policies b, c after SIGHUP")
    assert hello_policies(c)["b"] == ("snapkv", ["budget=5"])
    assert snapshot(c, seq) == before, "SIGHUP changed a sequence"
    with pytest.raises(KvdError) as e:
        c.compact(seq, policy="a")
    assert e.value.code == ErrorCode.NOT_FOUND
    assert snapshot(c, seq) == before
    # the new rules apply too
    seq2 = fill_sequence(c, MODEL_GQA_F32, K, V)
    r = c.compact(seq2)
    assert (r.policy, r.chosen_by) == ("c", "rule 1: length_above 10")

    # broken configs: refused whole, the old policies stay and kvd keeps serving
    for n, broken in enumerate([
            dict(policies={"x": {"method": "no-such-method"}}),
            dict(policies={"x": {"method": "snapkv", "params": {"budget": -3}}}),
            dict(policies={"x": {"method": "streamingllm"}}, rules=[{"policy": "ghost"}]),
            dict(policies={"x": {"method": "knorm"}}, page_tokens=8),
            dict(policies={}, raw="policies: [unclosed\n")], start=1):
        rewrite(**broken)
        wait_for(lambda: d.stderr().count("reload refused") >= n, what=f"refused reload {n}")
        assert sorted(hello_policies(c)) == ["b", "c"], broken
        assert snapshot(c, seq) == before
        r = c.compact(seq, policy="b", queries=Q)
        assert r.policy == "b" and list(r.budgets) == [5] * (L * H)
        seq_n = fill_sequence(c, MODEL_GQA_F32, K, V)
        assert c.compact(seq_n).chosen_by == "rule 1: length_above 10"
        c.release(seq_n)
        before = snapshot(c, seq)
    assert d.proc.poll() is None


# ---------------------------------------------------------------------------------------------
# Observation queries in shared memory

@pytest.mark.parametrize("method", ["snapkv", "adakv", "h2o"])
@pytest.mark.parametrize("model", [MODEL_GQA_F32, MODEL_GQA_F16])
def test_queries_in_shm_match_inline(gqa_client, model, method):
    c = gqa_client
    K, V, Q = data(model, seed=9)
    results = []
    for in_shm in (False, True):
        seq = fill_sequence(c, model, K, V)
        r = c.compact(seq, method, queries=Q, queries_in_shm=in_shm, budget=9)
        results.append((list(r.budgets), [(h.kept, h.before) for h in r.heads], r.pages_freed,
                        snapshot(c, seq)[2:]))
        c.release(seq)
    assert results[0] == results[1]
    # and f32 queries for an f16 model give the same scores as the same values in f16
    if model == MODEL_GQA_F16:
        seq = fill_sequence(c, model, K, V)
        r = c.compact(seq, method, queries=Q.astype(np.float32), queries_in_shm=True, budget=9)
        assert list(r.budgets) == results[0][0]
        assert snapshot(c, seq)[2:] == results[0][3]
        c.release(seq)


# ---------------------------------------------------------------------------------------------
# Bad input: the error code, the sequence unchanged, the daemon still serving

@pytest.fixture(scope="module")
def bad_files(gqa_daemon):
    """Score files beside the config file (the default files.directories), by the names a
    request gives."""
    d = gqa_daemon.workdir / "badscores"
    d.mkdir(exist_ok=True)
    (d / "not-json.json").write_text("{'0-0': [1, 2],")
    write_scores(d / "three-heads.json", L, 3)  # neither 2 KV heads nor 4 query heads
    write_scores(d / "four-layers.json", 4, H)
    write_scores(d / "good.json", L, H)
    return {"missing": "badscores/no-such-file.json", "not_json": "badscores/not-json.json",
            "three_heads": "badscores/three-heads.json", "four_layers": "badscores/four-layers.json",
            "good": "badscores/good.json"}


def _q(shape=(L, HQ, W, D), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


BAD = [
    # (id, kwargs(files) for compact, code, words the message must contain)
    ("unknown_policy", lambda f: dict(policy="no-such-policy"), ErrorCode.NOT_FOUND, ["no-such-policy"]),
    ("unknown_method", lambda f: dict(method="no-such-method"), ErrorCode.NOT_FOUND, ["no-such-method"]),
    ("unknown_param", lambda f: dict(method="snapkv", queries=_q(), bugdet=3),
     ErrorCode.INVALID_ARGUMENT, ["bugdet"]),
    ("param_type_string", lambda f: dict(method="snapkv", queries=_q(), budget="ten"),
     ErrorCode.INVALID_ARGUMENT, ["budget"]),
    ("param_type_float", lambda f: dict(method="knorm", budget=2.5), ErrorCode.INVALID_ARGUMENT, ["budget"]),
    ("param_type_bool", lambda f: dict(method="snapkv", queries=_q(), kernel=True),
     ErrorCode.INVALID_ARGUMENT, ["kernel"]),
    ("budget_negative", lambda f: dict(method="snapkv", queries=_q(), budget=-1),
     ErrorCode.INVALID_ARGUMENT, ["budget"]),
    ("budget_negative_knorm", lambda f: dict(method="knorm", budget=-5), ErrorCode.INVALID_ARGUMENT, ["budget"]),
    ("fraction_above_1", lambda f: dict(method="knorm", fraction=1.5), ErrorCode.INVALID_ARGUMENT, ["fraction"]),
    ("headkv_beta_1", lambda f: dict(method="headkv", queries=_q(), scores=f["good"], beta=1.0),
     ErrorCode.INVALID_ARGUMENT, ["beta"]),
    ("headkv_beta_below_1", lambda f: dict(method="headkv", queries=_q(), scores=f["good"], beta=0.5),
     ErrorCode.INVALID_ARGUMENT, ["beta"]),
    ("kernel_even", lambda f: dict(method="snapkv", queries=_q(), kernel=4), ErrorCode.INVALID_ARGUMENT, ["kernel"]),
    ("kernel_zero", lambda f: dict(method="snapkv", queries=_q(), kernel=0), ErrorCode.INVALID_ARGUMENT, ["kernel"]),
    ("kernel_negative", lambda f: dict(method="h2o", queries=_q(), kernel=-3), ErrorCode.INVALID_ARGUMENT, ["kernel"]),
    ("pooling_unknown", lambda f: dict(method="snapkv", queries=_q(), pooling="median"),
     ErrorCode.INVALID_ARGUMENT, ["pooling"]),
    ("window_param_too_large", lambda f: dict(method="knorm", window=N + 1), ErrorCode.INVALID_ARGUMENT, ["window"]),
    ("window_queries_too_many", lambda f: dict(method="snapkv", queries=_q((L, HQ, N + 1, D))),
     ErrorCode.INVALID_ARGUMENT, ["window"]),
    ("scores_missing", lambda f: dict(method="headkv", queries=_q(), scores=f["missing"]),
     ErrorCode.INVALID_ARGUMENT, ["no-such-file.json"]),
    ("scores_not_json", lambda f: dict(method="headkv", queries=_q(), scores=f["not_json"]),
     ErrorCode.INVALID_ARGUMENT, ["not-json.json"]),
    ("scores_wrong_heads", lambda f: dict(method="headkv", queries=_q(), scores=f["three_heads"]),
     ErrorCode.INVALID_ARGUMENT, ["three-heads.json"]),
    ("scores_wrong_layers", lambda f: dict(method="headkv", queries=_q(), scores=f["four_layers"]),
     ErrorCode.INVALID_ARGUMENT, ["four-layers.json"]),
    ("scores_unset", lambda f: dict(method="headkv", queries=_q()), ErrorCode.INVALID_ARGUMENT, ["scores"]),
    ("queries_wrong_q_heads", lambda f: dict(method="snapkv", queries=_q((L, H, W, D))),
     ErrorCode.INVALID_ARGUMENT, ["shape"]),
    ("queries_wrong_layers", lambda f: dict(method="snapkv", queries=_q((L + 1, HQ, W, D))),
     ErrorCode.INVALID_ARGUMENT, ["shape"]),
    ("queries_wrong_head_dim", lambda f: dict(method="snapkv", queries=_q((L, HQ, W, D // 2))),
     ErrorCode.INVALID_ARGUMENT, ["shape"]),
    ("queries_3d", lambda f: dict(method="snapkv", queries=_q((L * HQ, W, D))),
     ErrorCode.INVALID_ARGUMENT, ["shape"]),
    ("queries_dtype_f16", lambda f: dict(method="snapkv", queries=_q(dtype=np.float16)),
     ErrorCode.INVALID_ARGUMENT, ["dtype"]),
    ("queries_dtype_bf16", lambda f: dict(method="snapkv", queries=_q(dtype=ml_dtypes.bfloat16)),
     ErrorCode.INVALID_ARGUMENT, ["dtype"]),
    ("queries_shm_wrong_shape", lambda f: dict(method="snapkv", queries=_q((L, H, W, D)), queries_in_shm=True),
     ErrorCode.INVALID_ARGUMENT, ["shape"]),
]
NEEDS_QUERIES = ["snapkv", "h2o", "pyramidkv", "adakv", "headkv"]


def _check_refused(c, kwargs, code, words, model=MODEL_GQA_F32):
    K, V, _ = data(model, seed=10)
    seq = fill_sequence(c, model, K, V)
    try:
        before = snapshot(c, seq)
        free = c.stats().free_pages
        with pytest.raises(KvdError) as e:
            c.compact(seq, **kwargs)
        assert e.value.code == code, f"{e.value.code!r} ({e.value}) != {code!r}"
        msg = str(e.value)
        for w in words:
            assert w in msg, f"error message does not name {w!r}: {msg}"
        assert snapshot(c, seq) == before, "a refused compaction changed the sequence"
        assert c.stats().free_pages == free
        c.hello()
        # the sequence is still usable
        r = c.compact(seq, "streamingllm", sinks=1, recent=1)
        assert [h.kept for h in r.heads] == [2] * (L * H)
    finally:
        c.release(seq)


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_compact_request(gqa_client, bad_files, case):
    _, kwargs, code, words = case
    _check_refused(gqa_client, kwargs(bad_files), code, words)


@pytest.mark.parametrize("method", NEEDS_QUERIES)
def test_query_method_without_queries(gqa_client, bad_files, method):
    extra = dict(scores=bad_files["good"]) if method == "headkv" else {}
    _check_refused(gqa_client, dict(method=method, **extra), ErrorCode.FAILED_PRECONDITION,
                   ["queries", method])


def test_queries_data_length_mismatch(gqa_client):
    """A queries tensor whose bytes do not match its shape (hand-built request)."""
    c = gqa_client
    K, V, _ = data(seed=12)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    try:
        before = snapshot(c, seq)
        req = compact_pb2.CompactRequest(sequence_id=seq, method="snapkv")
        req.queries.CopyFrom(_tensor(_q()))
        req.queries.data = req.queries.data[:-4]
        with pytest.raises(KvdError) as e:
            c.call("compact", req)
        assert e.value.code == ErrorCode.INVALID_ARGUMENT
        assert snapshot(c, seq) == before
    finally:
        c.release(seq)


def test_queries_shm_outside_staging(gqa_client):
    """queries_shm without a staging buffer: FAILED_PRECONDITION; outside it: INVALID_ARGUMENT."""
    c = gqa_client
    K, V, _ = data(seed=15)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    try:
        before = snapshot(c, seq)

        def request(offset):
            req = compact_pb2.CompactRequest(sequence_id=seq, method="snapkv")
            req.queries_shm.dtype = _tensor(_q()).dtype
            req.queries_shm.shape.extend([L, HQ, W, D])
            req.queries_shm.offset = offset
            return req
        with pytest.raises(KvdError) as e:
            c.call("compact", request(0))
        assert e.value.code == ErrorCode.FAILED_PRECONDITION and "Stage" in str(e.value)
        st = c.stage(seq, L * HQ * W * D * 4)
        for offset in (0, st.offset + st.bytes - 4, st.offset + st.bytes):
            with pytest.raises(KvdError) as e:
                c.call("compact", request(offset))
            assert e.value.code == ErrorCode.INVALID_ARGUMENT, offset
        assert snapshot(c, seq) == before
    finally:
        c.release(seq)


def test_bad_input_counts_and_daemon_serving(gqa_client, bad_files):
    """After a burst of refused requests kvd still compacts correctly."""
    c = gqa_client
    for _, kwargs, code, _ in BAD[:6]:
        K, V, _ = data(seed=13)
        seq = fill_sequence(c, MODEL_GQA_F32, K, V)
        with pytest.raises(KvdError):
            c.compact(seq, **kwargs(bad_files))
        c.release(seq)
    K, V, Q = data(seed=14)
    seq = fill_sequence(c, MODEL_GQA_F32, K, V)
    r = c.compact(seq, "snapkv", queries=Q, budget=4)
    budgets, kept, scores = ref.reference("snapkv", K.astype(float), Q.astype(float), budget=4)
    check_against_reference(c, seq, r, budgets, kept, scores, W)
    c.release(seq)


# ---------------------------------------------------------------------------------------------
# Bad config at start-up: exit 2 naming the key

@pytest.mark.parametrize("case", [
    ("unknown_method", {"bad": {"method": "no-such-method"}}, None, None,
     ["policies.bad", "no-such-method"]),
    ("unknown_scorer", {"bad": {"scorer": "no-such-scorer", "allocator": "pyramidkv"}}, None, None,
     ["policies.bad", "no-such-scorer"]),
    ("unknown_allocator", {"bad": {"scorer": "knorm", "allocator": "no-such-alloc"}}, None, None,
     ["policies.bad", "no-such-alloc"]),
    ("bad_param", {"bad": {"method": "snapkv", "params": {"kernel": 4}}}, None, None,
     ["policies.bad", "kernel"]),
    ("rule_undefined_policy", {"ok": {"method": "knorm"}}, [{"when": {"length_above": 5}, "policy": "ghost"}],
     None, ["rules", "ghost"]),
    ("default_policy_undefined", {"ok": {"method": "knorm"}}, None, "ghost",
     ["default_policy", "ghost"]),
    ("headkv_missing_scores_default", {"hk": {"method": "headkv", "params": {"scores": "missing-scores.json"}}},
     None, "hk", ["policies.hk", "missing-scores.json"]),
], ids=lambda c: c[0])
def test_bad_config_exits_2(make_daemon, case):
    _, policies, rules, default_policy, words = case

    def mutate(cfg):
        add_gqa_models(cfg)
        cfg["policies"] = policies
        if rules is not None:
            cfg["rules"] = rules
        if default_policy is not None:
            for m in cfg["models"]:
                if m["name"] == MODEL_GQA_F32:
                    m["default_policy"] = default_policy
    d = make_daemon(mutate, start=False)
    d.start(wait=False)
    rc = d.proc.wait(10)
    err = d.stderr()
    assert rc == 2, f"exit code {rc}:\n{err}"
    for w in words:
        assert w in err, f"start-up error does not name {w!r}:\n{err}"
    assert not d.shm_path.exists()
