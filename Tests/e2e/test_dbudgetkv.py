"""DBudgetKV: the per-layer cut of the stop rule against NumPy (reference_seed.dbudget_floors) on
peaked, flat and sink-dominated attention, for every variant of its parameters (norm l2 / l1,
sinks kept outside the norm, the ranking window), budgets shrinking as T grows, the stopper on top
of SnapKV (budget = max(snapkv budget, floor), sinks on top), refused parameter values, and invalid
stopper policies at start-up.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
import reference_seed as rs
from conftest import (MODEL_SEED_F16, MODEL_SEED_F32, SEED_MODELS, SEEDM, ErrorCode, KvdError,
                      add_seed_models, fill_sequence, sequence_snapshot, start_module_daemon,
                      stop_module_daemon)

L, H, HQ, D = SEEDM["layers"], SEEDM["kv_heads"], SEEDM["q_heads"], SEEDM["head_dim"]
G = HQ // H
N, W = 64, 8
P = N - W
HEAVY = [1, 2, 4, 6]  # heavy-hitter tokens per head, by layer (peaked data)
# A ratio this close to T could fall on either side in kvd's float32 dot products: data check.
MARGIN = 1e-6

# The bundled defaults (Plugins/dbudgetkv/DBudgetKV.swift, chosen in docs/QUALITY.md) and the
# paper's stop (ℓ2 over every prefix token; the released code's ranking window of 8 = W here).
DEFAULTS = {"threshold": 0.07, "norm": "l1", "sinks": 4, "rank_window": 0, "stop_window": 0, "pooling": "max",
            "kernel": 31}
PAPER_STOP = {"norm": "l2", "sinks": 0, "stop_window": 1}  # what a stopper on another method takes
UNPOOLED = {"rank_window": 8, "pooling": "none", "kernel": 1}  # the released code's ranking (W = 8)
PAPER = {**PAPER_STOP, **UNPOOLED}

POLICIES = {
    "snap_stop": {"method": "snapkv", "stopper": "dbudgetkv", "params": {"budget": 5}},
    "h2o_stop": {"scorer": "h2o", "allocator": "uniform", "stopper": "dbudgetkv",
                 "params": {"budget": 3, "threshold": 0.2}},
}
BUDGETS_SEEN = {}


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


def _group_direction(seed, model, scale, keys_along):
    """Random K, V and small queries; then each KV head's group of queries gets `scale`·u along a
    random unit u, and `keys_along(rng, l, h, u, K)` points some of that head's keys along u."""
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((L, H, N, D))
    V = rng.standard_normal((L, H, N, D))
    Q = 0.3 * rng.standard_normal((L, HQ, W, D))
    for l in range(L):
        for h in range(H):
            u = rng.standard_normal(D)
            u /= np.linalg.norm(u)
            Q[l, h * G:(h + 1) * G] += scale * u
            keys_along(rng, l, h, u, K)
    dt = SEED_MODELS[model]
    return K.astype(dt), V.astype(dt), Q.astype(dt)


def peaked(seed, model=MODEL_SEED_F32):
    """Every query of a KV head's group ≈ 4u; HEAVY[l] prefix keys ≈ 5u, so the last query's
    attention sits on a few tokens that the H2O ranking also puts last to drop."""
    def heavy(rng, l, h, u, K):
        chosen = rng.choice(P, HEAVY[l], replace=False)
        K[l, h, chosen] = 5 * u + 0.3 * rng.standard_normal((HEAVY[l], D))
    return _group_direction(seed, model, 4, heavy)


def flat(seed, model=MODEL_SEED_F32):
    """Tiny queries: the last query attends almost uniformly."""
    rng = np.random.default_rng(seed)
    dt = SEED_MODELS[model]
    return (rng.standard_normal((L, H, N, D)).astype(dt), rng.standard_normal((L, H, N, D)).astype(dt),
            (0.05 * rng.standard_normal((L, HQ, W, D))).astype(dt))


def sinky(seed, model=MODEL_SEED_F32):
    """Token 0 draws most of every query's attention (as the attention sink does in real models),
    the rest is spread over a few mildly favoured keys and noise."""
    def sink(rng, l, h, u, K):
        K[l, h, 0] = 3 * u
        mild = rng.choice(np.arange(1, P), 12, replace=False)
        K[l, h, mild] += 1.0 * u
    return _group_direction(seed, model, 3, sink)


DATA = {"peaked": peaked, "flat": flat, "sinky": sinky}


def check_kept(c, seq, budgets, scores, what, sinks=0):
    for i, hd in enumerate(c.query(seq, mode="metadata")):
        ref.check_topk(hd.positions, scores[i], budgets[i], W, N, f"{what} head {i}", sinks=sinks)


def reference_floors(K, Q, T, params, **kw):
    """rs.dbudget_floors with a request's parameters (kvd's defaults for those not given)."""
    p = {**DEFAULTS, **params}
    return rs.dbudget_floors(K.astype(np.float64), Q.astype(np.float64), T, norm=p["norm"],
                             sinks=p["sinks"], rank_window=p["rank_window"],
                             stop_window=p["stop_window"], pooling=p["pooling"], kernel=p["kernel"], **kw)


# ---------------------------------------------------------------------------------------------
# DBudgetKV alone

@pytest.mark.parametrize("model", [MODEL_SEED_F32, MODEL_SEED_F16])
@pytest.mark.parametrize("kind", ["peaked", "flat"])
@pytest.mark.parametrize("T", [0.05, 0.01])
def test_exact_cut(c, model, kind, T):
    """The paper's ℓ2 stop over every prefix token."""
    K, V, Q = DATA[kind](1, model)
    floors, cuts, scores, margin = reference_floors(K, Q, T, PAPER)
    assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
    seq = fill_sequence(c, model, K, V, chunk=32)
    r = c.compact(seq, "dbudgetkv", queries=Q, threshold=T, **PAPER)
    assert r.method == "dbudgetkv"
    BUDGETS_SEEN[(kind, model, T)] = list(r.budgets)
    print(f"\nDBudgetKV {kind} {model} T={T}: budgets {list(r.budgets)} (prefix {P}), cuts {cuts}")
    assert list(r.budgets) == floors, f"budgets {list(r.budgets)} != reference {floors} (cuts {cuts})"
    assert [hc.kept for hc in r.heads] == [f + W for f in floors]
    check_kept(c, seq, floors, scores, kind)
    # the cut is per layer: both heads of a layer keep the same count here (equal prefixes)
    for l in range(L):
        assert len(set(floors[l * H:(l + 1) * H])) == 1
    if kind == "peaked":
        # a few keys carry the last query's attention: small budgets, growing with HEAVY[l]
        assert all(f <= 2 * HEAVY[i // H] + 2 for i, f in enumerate(floors)), floors
        assert floors[0] < floors[-1]
    else:
        assert all(f >= P // 2 for f in floors), floors
    c.release(seq)


@pytest.mark.parametrize("kind", ["peaked", "flat"])
@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_budgets_shrink_as_threshold_grows(c, kind, norm):
    K, V, Q = DATA[kind](2)
    seen = []
    for T in [0.001, 0.01, 0.03, 0.05, 0.1, 0.2, 0.4, 0.7, 0.95]:
        params = {**PAPER, "norm": norm}
        floors, cuts, scores, margin = reference_floors(K, Q, T, params)
        assert margin > MARGIN, f"test data: T={T}: a ratio is within {margin:.2g} of T"
        seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
        r = c.compact(seq, "dbudgetkv", queries=Q, threshold=T, **params)
        assert list(r.budgets) == floors, f"T={T}: budgets {list(r.budgets)} != reference {floors}"
        check_kept(c, seq, floors, scores, f"T={T}")
        seen.append(list(r.budgets))
        c.release(seq)
    for a, b in zip(seen, seen[1:]):
        assert all(y <= x for x, y in zip(a, b)), f"budgets grew with T: {a} -> {b}"
    assert seen[0] != seen[-1]


def test_same_cut_for_heads_of_unequal_length(c):
    """After a first compaction the heads of a layer hold different counts: the cut i* is one count
    per layer, so floor_h = max(prefix_h − i*, 0) differs between the heads."""
    K, V, Q = peaked(6)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    # streamingllm keeps the same count everywhere; adakv moves budget between a layer's heads
    c.compact(seq, "adakv", queries=Q, budget=20)
    before = c.query(seq, mode="inline", copy=True)
    counts = [h.num_tokens for h in before]
    assert any(counts[l * H] != counts[l * H + 1] for l in range(L)), f"test data: counts {counts}"
    Q2 = Q.copy()
    heads = [np.asarray(h.keys, np.float64) for h in before]
    p = {**DEFAULTS, **PAPER}
    floors, cuts, scores, margin = rs.dbudget_floors(heads, Q2.astype(np.float64), 0.05, norm=p["norm"],
                                                     sinks=p["sinks"], rank_window=p["rank_window"])
    assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
    r = c.compact(seq, "dbudgetkv", queries=Q2, threshold=0.05, **PAPER)
    assert list(r.budgets) == floors, f"budgets {list(r.budgets)} != reference {floors} (cuts {cuts})"
    prefixes = [n - W for n in counts]
    assert floors == [max(p - cuts[i // H], 0) for i, p in enumerate(prefixes)]
    for i, (hd, old) in enumerate(zip(c.query(seq, mode="metadata"), before)):
        want = ref.topk(scores[i], floors[i], W, counts[i])
        assert hd.positions.tolist() == old.positions[want].tolist(), f"head {i}"
    c.release(seq)


# Each variant against the reference. rank_window 3 < W ranks by the last 3 queries only; 0 and
# 99 (> W) rank by all W; sinks keep the first tokens and leave them out of the norm.
VARIANTS = {
    "l2": {"norm": "l2", "sinks": 0},
    "l1": {"norm": "l1", "sinks": 0},
    "l2-sinks1": {"norm": "l2", "sinks": 1},
    "l2-sinks4": {"norm": "l2", "sinks": 4},
    "l1-sinks4": {"norm": "l1", "sinks": 4},
    "l2-rank3": {"norm": "l2", "rank_window": 3},
    "l1-sinks2-rank1": {"norm": "l1", "sinks": 2, "rank_window": 1},
    "l1-rank0": {"norm": "l1", "rank_window": 0},
    "l2-rank99": {"norm": "l2", "rank_window": 99},
    "l1-sinks4-stop8": {"norm": "l1", "sinks": 4, "stop_window": 8},
    "l2-stop3-rank3": {"norm": "l2", "stop_window": 3, "rank_window": 3},
    "l1-stop0-rank0": {"norm": "l1", "stop_window": 0, "rank_window": 0},
    "l1-stop99-max7": {"norm": "l1", "stop_window": 99, "rank_window": 0, "pooling": "max", "kernel": 7},
    "l1-avg5": {"norm": "l1", "pooling": "avg", "kernel": 5},
    "paper-stop": {"stop_window": 1, "pooling": "none", "kernel": 1, "rank_window": 8},
    "defaults": {},
}


@pytest.mark.parametrize("kind", ["peaked", "flat", "sinky"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("T", [0.01, 0.05])
def test_variant_exact(c, kind, variant, T):
    params = VARIANTS[variant]
    sinks = {**DEFAULTS, **params}["sinks"]
    K, V, Q = DATA[kind](7)
    floors, cuts, scores, margin = reference_floors(K, Q, T, params)
    assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    r = c.compact(seq, "dbudgetkv", queries=Q, threshold=T, **params)
    assert list(r.budgets) == floors, f"{variant}: budgets {list(r.budgets)} != reference {floors} (cuts {cuts})"
    assert [hc.kept for hc in r.heads] == [f + W + sinks for f in floors]
    check_kept(c, seq, floors, scores, f"{kind} {variant}", sinks=sinks)
    if sinks:
        for hd in c.query(seq, mode="metadata"):
            assert hd.positions[:sinks].tolist() == list(range(sinks))
    c.release(seq)


def _kept_sets(c, K, V, Q, T, params):
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    r = c.compact(seq, "dbudgetkv", queries=Q, threshold=T, **params)
    kept = [hd.positions.tolist() for hd in c.query(seq, mode="metadata")]
    c.release(seq)
    return list(r.budgets), kept


@pytest.mark.parametrize("a,b", [
    ({"norm": "l2"}, {"norm": "l1"}),
    ({"norm": "l2", "sinks": 0}, {"norm": "l2", "sinks": 1}),
    ({"norm": "l1", "sinks": 0}, {"norm": "l1", "sinks": 4}),
    ({"rank_window": 8}, {"rank_window": 2}),
    ({**UNPOOLED, "stop_window": 1}, {**UNPOOLED, "stop_window": 16}),
    ({"pooling": "none", "kernel": 1}, {"pooling": "max", "kernel": 7}),
], ids=["norm", "l2-sinks", "l1-sinks", "rank_window", "stop_window", "pooling"])
def test_each_parameter_changes_the_plan(c, a, b):
    """On sink-dominated data each parameter changes what is kept, in the reference and in kvd
    alike: a daemon that ignored the parameter fails here even where both results look plausible."""
    K, V, Q = sinky(11)
    T = 0.05
    plans = []
    for params in (a, b):
        floors, _, scores, margin = reference_floors(K, Q, T, params)
        assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
        sinks = {**DEFAULTS, **params}["sinks"]
        want = [ref.topk(scores[i], floors[i], W, N, sinks).tolist() for i in range(L * H)]
        got_budgets, got = _kept_sets(c, K, V, Q, T, params)
        assert got_budgets == floors, f"{params}: budgets {got_budgets} != reference {floors}"
        assert got == want, f"{params}: kept sets differ from the reference"
        plans.append(want)
    assert plans[0] != plans[1], f"test data: {a} and {b} keep the same tokens"


def test_l2_sink_lets_everything_go_l1_does_not(c):
    """The failure docs/QUALITY.md explains: when one token holds the ℓ2 norm, a small ℓ2 loss
    drops almost every other token; the ℓ1 stop, or the ℓ2 stop with the sink outside the norm,
    keeps far more."""
    K, V, Q = sinky(12)
    T = 0.01
    kept = {}
    for name, params in [("l2", {**PAPER, "norm": "l2", "sinks": 0}), ("l2-sink", {**PAPER, "norm": "l2", "sinks": 1}),
                         ("l1", {**PAPER, "norm": "l1", "sinks": 0})]:
        floors, *_ = reference_floors(K, Q, T, params)
        got, _ = _kept_sets(c, K, V, Q, T, params)
        assert got == floors
        kept[name] = sum(floors)
    assert kept["l2"] < kept["l1"] and kept["l2"] < kept["l2-sink"], kept


def test_defaults_and_hello(c):
    h = c.hello()
    methods = {m.name: m for m in h.methods}
    params = {p.name: p for p in methods["dbudgetkv"].params}
    assert {"threshold", "norm", "sinks", "rank_window", "pooling", "kernel", "window"} <= set(params)
    assert (params["norm"].type, params["norm"].default_value) == ("string", DEFAULTS["norm"])
    assert (params["sinks"].type, params["sinks"].default_value, params["sinks"].min_value) == (
        "int", str(DEFAULTS["sinks"]), "0")
    assert (params["rank_window"].type, params["rank_window"].default_value) == (
        "int", str(DEFAULTS["rank_window"]))
    assert float(params["threshold"].default_value) == DEFAULTS["threshold"]
    assert (params["stop_window"].type, params["stop_window"].default_value) == ("int", str(DEFAULTS["stop_window"]))
    assert (params["pooling"].default_value, params["kernel"].default_value) == (
        DEFAULTS["pooling"], str(DEFAULTS["kernel"]))
    K, V, Q = sinky(13)
    floors, *_ = reference_floors(K, Q, DEFAULTS["threshold"], {})
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    r = c.compact(seq, "dbudgetkv", queries=Q)
    assert list(r.budgets) == floors
    c.release(seq)


@pytest.mark.parametrize("params,needle", [
    ({"norm": "l3"}, "norm"), ({"norm": ""}, "norm"), ({"norm": "L2"}, "norm"), ({"norm": 2}, "norm"),
    ({"sinks": -1}, "sinks"), ({"sinks": 1.5}, "sinks"), ({"rank_window": -1}, "rank_window"),
    ({"rank_window": "8"}, "rank_window"), ({"stop_window": -1}, "stop_window"),
    ({"stop_window": 2.5}, "stop_window"), ({"pooling": "median"}, "pooling"),
], ids=["l3", "empty", "upper", "int-norm", "neg-sinks", "float-sinks", "neg-rank", "str-rank",
        "neg-stop", "float-stop", "bad-pooling"])
def test_bad_parameters(c, params, needle):
    K, V, Q = peaked(4)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    before = sequence_snapshot(c, seq)
    with pytest.raises(KvdError) as e:
        c.compact(seq, "dbudgetkv", queries=Q, **params)
    assert e.value.code == ErrorCode.INVALID_ARGUMENT, e.value
    assert needle in str(e.value), e.value
    if needle != "rank_window":  # the ranking window belongs to dbudgetkv's own ranking, not the stopper
        with pytest.raises(KvdError) as e:
            c.compact(seq, policy="snap_stop", queries=Q, **params)
        assert e.value.code == ErrorCode.INVALID_ARGUMENT, e.value
    assert sequence_snapshot(c, seq) == before
    c.release(seq)


def test_needs_queries(c):
    K, V, Q = peaked(3)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    before = sequence_snapshot(c, seq)
    with pytest.raises(KvdError) as e:
        c.compact(seq, "dbudgetkv")
    assert e.value.code == ErrorCode.FAILED_PRECONDITION, e.value
    assert sequence_snapshot(c, seq) == before
    c.release(seq)


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5, -0.1])
def test_bad_threshold(c, threshold):
    K, V, Q = peaked(4)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    before = sequence_snapshot(c, seq)
    with pytest.raises(KvdError) as e:
        c.compact(seq, "dbudgetkv", queries=Q, threshold=threshold)
    assert e.value.code == ErrorCode.INVALID_ARGUMENT, e.value
    with pytest.raises(KvdError) as e:
        c.compact(seq, policy="snap_stop", queries=Q, threshold=threshold)
    assert e.value.code == ErrorCode.INVALID_ARGUMENT, e.value
    assert sequence_snapshot(c, seq) == before
    c.release(seq)


# ---------------------------------------------------------------------------------------------
# As a stopper

@pytest.mark.parametrize("kind", ["peaked", "flat"])
@pytest.mark.parametrize("policy,scorer,budget,T,overrides", [
    ("snap_stop", "snapkv", 5, DEFAULTS["threshold"], {}),
    ("snap_stop", "snapkv", 20, DEFAULTS["threshold"], {"budget": 20}),
    ("snap_stop", "snapkv", 5, 0.3, {"threshold": 0.3}),
    ("h2o_stop", "h2o", 3, 0.2, {}),
], ids=["snap-B5", "snap-B20", "snap-T0.3", "h2o-B3-T0.2"])
def test_stopper(c, kind, policy, scorer, budget, T, overrides):
    """budget_h = max(allocator budget, floor_h), the floor computed on the scorer's own ranking."""
    K, V, Q = DATA[kind](5)
    Kf, Qf = K.astype(np.float64), Q.astype(np.float64)
    scores = ref.method_scores(scorer, Kf, Qf, W)
    floors, cuts, _, margin = reference_floors(K, Q, T, {}, scores=scores)
    assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
    want = [max(budget, f) for f in floors]
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    r = c.compact(seq, policy=policy, queries=Q, **overrides)
    assert r.policy == policy
    assert list(r.budgets) == want, f"budgets {list(r.budgets)} != max({budget}, floors {floors})"
    check_kept(c, seq, want, scores, f"{policy} {kind}", sinks=DEFAULTS["sinks"])
    c.release(seq)


@pytest.mark.parametrize("kind", ["peaked", "sinky"])
@pytest.mark.parametrize("norm,sinks", [("l2", 4), ("l1", 2), ("l2", 0)])
def test_stopper_variants(c, kind, norm, sinks):
    """As a stopper the sinks are kept on top of max(budget, floor) and left out of the norm; the
    floor counts the tokens between the sinks and the window."""
    K, V, Q = DATA[kind](8)
    scores = ref.method_scores("snapkv", K.astype(np.float64), Q.astype(np.float64), W)
    floors, _, _, margin = reference_floors(K, Q, 0.05, {"norm": norm, "sinks": sinks}, scores=scores)
    assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
    want = [max(5, f) for f in floors]
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    r = c.compact(seq, policy="snap_stop", queries=Q, threshold=0.05, norm=norm, sinks=sinks)
    assert list(r.budgets) == want, f"budgets {list(r.budgets)} != max(5, floors {floors})"
    assert [hc.kept for hc in r.heads] == [b + W + sinks for b in want]
    check_kept(c, seq, want, scores, f"snap_stop {kind} {norm} sinks {sinks}", sinks=sinks)
    c.release(seq)


def test_stopper_changes_something(c):
    """With the paper's ℓ2 stop: on flat data the stop keeps more than SnapKV's budget alone; on
    peaked data (a few keys hold the ℓ2 norm) the budget wins."""
    for kind, expect_floor in [("flat", True), ("peaked", False)]:
        K, V, Q = DATA[kind](5)
        seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
        r = c.compact(seq, policy="snap_stop", queries=Q, threshold=0.05, **PAPER_STOP)
        if expect_floor:
            assert all(b > 5 for b in r.budgets), list(r.budgets)
        else:
            assert 5 in list(r.budgets), list(r.budgets)
        c.release(seq)


# ---------------------------------------------------------------------------------------------
# Invalid compositions: exit 2 at start-up naming the policy

@pytest.mark.parametrize("policy", [
    {"stopper": "dbudgetkv"},
    {"stopper": "dbudgetkv", "params": {"threshold": 0.1}},
    {"method": "streamingllm", "stopper": "dbudgetkv"},
    {"method": "balancekv", "stopper": "dbudgetkv"},
    {"method": "snapkv", "stopper": "no-such-stopper"},
    {"method": "snapkv", "stopper": "dbudgetkv", "params": {"norm": "l3"}},
    {"method": "snapkv", "stopper": "dbudgetkv", "params": {"sinks": -4}},
], ids=["stopper-only", "stopper-only-params", "streamingllm", "balancekv", "unknown-stopper",
        "bad-norm", "negative-sinks"])
def test_invalid_stopper_policy_exits_2(make_daemon, policy):
    d = make_daemon(lambda cfg: add_seed_models(cfg, {"badstop": policy}), start=False)
    d.start(wait=False)
    rc = d.proc.wait(10)
    err = d.stderr()
    assert rc == 2, f"exit code {rc}:\n{err}"
    assert "badstop" in err, f"start-up error does not name the policy:\n{err}"
    assert not d.shm_path.exists()
