"""DBudgetKV: the per-layer cut of the stop rule against NumPy (reference_seed.dbudget_floors) on
peaked and flat attention, budgets shrinking as T grows, the stopper on top of SnapKV
(budget = max(snapkv budget, floor)), refused thresholds, and invalid stopper policies at start-up.
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


def peaked(seed, model=MODEL_SEED_F32):
    """Every query of a KV head's group ≈ 4u; HEAVY[l] prefix keys ≈ 5u, so the last query's
    attention sits on a few tokens that the H2O ranking also puts last to drop."""
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((L, H, N, D))
    V = rng.standard_normal((L, H, N, D))
    Q = 0.3 * rng.standard_normal((L, HQ, W, D))
    for l in range(L):
        for h in range(H):
            u = rng.standard_normal(D)
            u /= np.linalg.norm(u)
            Q[l, h * G:(h + 1) * G] += 4 * u
            heavy = rng.choice(P, HEAVY[l], replace=False)
            K[l, h, heavy] = 5 * u + 0.3 * rng.standard_normal((HEAVY[l], D))
    dt = SEED_MODELS[model]
    return K.astype(dt), V.astype(dt), Q.astype(dt)


def flat(seed, model=MODEL_SEED_F32):
    """Tiny queries: the last query attends almost uniformly."""
    rng = np.random.default_rng(seed)
    dt = SEED_MODELS[model]
    return (rng.standard_normal((L, H, N, D)).astype(dt), rng.standard_normal((L, H, N, D)).astype(dt),
            (0.05 * rng.standard_normal((L, HQ, W, D))).astype(dt))


DATA = {"peaked": peaked, "flat": flat}


def check_kept(c, seq, budgets, scores, what):
    for i, hd in enumerate(c.query(seq, mode="metadata")):
        ref.check_topk(hd.positions, scores[i], budgets[i], W, N, f"{what} head {i}")


# ---------------------------------------------------------------------------------------------
# DBudgetKV alone

@pytest.mark.parametrize("model", [MODEL_SEED_F32, MODEL_SEED_F16])
@pytest.mark.parametrize("kind", ["peaked", "flat"])
@pytest.mark.parametrize("threshold", [None, 0.01])
def test_exact_cut(c, model, kind, threshold):
    K, V, Q = DATA[kind](1, model)
    Kf, Qf = K.astype(np.float64), Q.astype(np.float64)
    T = 0.05 if threshold is None else threshold
    floors, cuts, scores, margin = rs.dbudget_floors(Kf, Qf, T)
    assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
    seq = fill_sequence(c, model, K, V, chunk=32)
    extra = {} if threshold is None else {"threshold": threshold}
    r = c.compact(seq, "dbudgetkv", queries=Q, **extra)
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
def test_budgets_shrink_as_threshold_grows(c, kind):
    K, V, Q = DATA[kind](2)
    Kf, Qf = K.astype(np.float64), Q.astype(np.float64)
    seen = []
    for T in [0.001, 0.01, 0.03, 0.05, 0.1, 0.2, 0.4, 0.7, 0.95]:
        floors, cuts, scores, margin = rs.dbudget_floors(Kf, Qf, T)
        assert margin > MARGIN, f"test data: T={T}: a ratio is within {margin:.2g} of T"
        seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
        r = c.compact(seq, "dbudgetkv", queries=Q, threshold=T)
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
    floors, cuts, scores, margin = rs.dbudget_floors(heads, Q2.astype(np.float64), 0.05)
    assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
    r = c.compact(seq, "dbudgetkv", queries=Q2)
    assert list(r.budgets) == floors, f"budgets {list(r.budgets)} != reference {floors} (cuts {cuts})"
    prefixes = [n - W for n in counts]
    assert floors == [max(p - cuts[i // H], 0) for i, p in enumerate(prefixes)]
    for i, (hd, old) in enumerate(zip(c.query(seq, mode="metadata"), before)):
        want = ref.topk(scores[i], floors[i], W, counts[i])
        assert hd.positions.tolist() == old.positions[want].tolist(), f"head {i}"
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
    ("snap_stop", "snapkv", 5, 0.05, {}),
    ("snap_stop", "snapkv", 20, 0.05, {"budget": 20}),
    ("snap_stop", "snapkv", 5, 0.3, {"threshold": 0.3}),
    ("h2o_stop", "h2o", 3, 0.2, {}),
], ids=["snap-B5", "snap-B20", "snap-T0.3", "h2o-B3-T0.2"])
def test_stopper(c, kind, policy, scorer, budget, T, overrides):
    """budget_h = max(allocator budget, floor_h), the floor computed on the scorer's own ranking."""
    K, V, Q = DATA[kind](5)
    Kf, Qf = K.astype(np.float64), Q.astype(np.float64)
    scores = ref.method_scores(scorer, Kf, Qf, W)
    floors, cuts, _, margin = rs.dbudget_floors(Kf, Qf, T, scores=scores)
    assert margin > MARGIN, f"test data: a ratio is within {margin:.2g} of T"
    want = [max(budget, f) for f in floors]
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
    r = c.compact(seq, policy=policy, queries=Q, **overrides)
    assert r.policy == policy
    assert list(r.budgets) == want, f"budgets {list(r.budgets)} != max({budget}, floors {floors})"
    check_kept(c, seq, want, scores, f"{policy} {kind}")
    c.release(seq)


def test_stopper_changes_something(c):
    """On flat data the stop keeps more than SnapKV's budget alone; on peaked data the budget wins."""
    for kind, expect_floor in [("flat", True), ("peaked", False)]:
        K, V, Q = DATA[kind](5)
        seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=32)
        r = c.compact(seq, policy="snap_stop", queries=Q)
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
], ids=["stopper-only", "stopper-only-params", "streamingllm", "balancekv", "unknown-stopper"])
def test_invalid_stopper_policy_exits_2(make_daemon, policy):
    d = make_daemon(lambda cfg: add_seed_models(cfg, {"badstop": policy}), start=False)
    d.start(wait=False)
    rc = d.proc.wait(10)
    err = d.stderr()
    assert rc == 2, f"exit code {rc}:\n{err}"
    assert "badstop" in err, f"start-up error does not name the policy:\n{err}"
    assert not d.shm_path.exists()
