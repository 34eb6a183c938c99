"""BalanceKV: kept positions and log-weights equal a NumPy port of the weighted halving walk
(reference_seed.balanced_walk, float32 like kvd, SplitMix64 draws), determinism per seed, the
attention-output error against uniform halving and SnapKV at equal size, log-weights across
appends and later compactions, and refused input.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
import reference_seed as rs
from conftest import (MODEL_SEED_F16, MODEL_SEED_F32, SEED_MODELS, SEEDM, ErrorCode, KvdError,
                      fill_sequence, sequence_snapshot, start_module_daemon, stop_module_daemon)

L, H, HQ, D = SEEDM["layers"], SEEDM["kv_heads"], SEEDM["q_heads"], SEEDM["head_dim"]
G = HQ // H
SMALL = dict(sinks=4, recent=4, block=32, itrs=2)  # middle 120: padded to 128, then 60 → 64


@pytest.fixture(scope="module")
def daemon():
    d = start_module_daemon()
    yield d
    stop_module_daemon(d)


@pytest.fixture(scope="module")
def c(daemon):
    cl = daemon.client()
    yield cl
    cl.close()


def random_kv(seed, n, model=MODEL_SEED_F32):
    rng = np.random.default_rng(seed)
    dt = SEED_MODELS[model]
    return (rng.standard_normal((L, H, n, D)).astype(dt), rng.standard_normal((L, H, n, D)).astype(dt))


def heads_of(a):
    return [np.asarray(a[l, h], np.float32) for l in range(L) for h in range(H)]


def port(K, V, lw=None, **params):
    n = K.shape[2]
    lws = lw if lw is not None else [np.zeros(n, np.float32)] * (L * H)
    return rs.balancekv_reference(heads_of(K), heads_of(V), lws, **params)


def assert_matches_port(c, seq, refs, what="", positions=None):
    """``refs`` index each head's tokens; ``positions`` (per head) maps them to positions
    (default: the identity, for a sequence not compacted before)."""
    q = c.query(seq, mode="metadata")
    assert len(q) == len(refs)
    for i, (hd, (kept, lw, margin)) in enumerate(zip(q, refs)):
        if positions is not None:
            kept = np.asarray(positions[i])[kept]
        assert hd.positions.tolist() == kept.tolist(), (
            f"{what} head {i}: kept {hd.positions.tolist()} != port {kept.tolist()} "
            f"(smallest |p - u| in the port's walk: {margin:.3g})")
        assert hd.log_weights.view(np.uint32).tolist() == lw.view(np.uint32).tolist(), (
            f"{what} head {i}: log-weights {hd.log_weights.tolist()} != port {lw.tolist()}")


# ---------------------------------------------------------------------------------------------
# Agreement with the port

@pytest.mark.parametrize("variant", ["balanced", "uniform"])
@pytest.mark.parametrize("seed", [0, 1, 7, 1234, 2**40 + 3])
def test_matches_port(c, variant, seed):
    K, V = random_kv(10 + seed % 97, 4 + 120 + 4)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=64)
    r = c.compact(seq, "balancekv", seed=seed, variant=variant, **SMALL)
    assert r.method == "balancekv"
    assert [(hc.before, hc.kept) for hc in r.heads] == [(128, 4 + 30 + 4)] * (L * H)
    refs = port(K, V, seed=seed, variant=variant, **SMALL)
    assert_matches_port(c, seq, refs, f"{variant} seed {seed}")
    # sinks and recent keep weight 0; a kept middle token carries ×2 or ×1 per round (the ×1 ones
    # come after the position c where the halving stops)
    for hd in c.query(seq, mode="metadata"):
        assert np.all(hd.log_weights[:4] == 0) and np.all(hd.log_weights[-4:] == 0)
        lw = hd.log_weights[4:-4]
        assert np.all(np.isclose(lw, np.log(2.0)) | np.isclose(lw, np.log(4.0)) | (lw == 0)), lw
    c.release(seq)


def test_matches_port_defaults_f16(c):
    """Default parameters (sinks 32, recent 32, itrs 2, block 128, γ 4, τ 1, β 0, seed 1234) on
    an f16 model, middle 200 (padded to 256, then 100 → 128)."""
    K, V = random_kv(3, 32 + 200 + 32, MODEL_SEED_F16)
    seq = fill_sequence(c, MODEL_SEED_F16, K, V, chunk=128)
    c.compact(seq, "balancekv")
    assert_matches_port(c, seq, port(K, V), "defaults f16")
    c.release(seq)


def test_matches_port_other_params(c):
    """γ, τ, β, itrs 3 and block 16 reach the walk as documented."""
    K, V = random_kv(4, 8 + 100 + 8)
    params = dict(sinks=8, recent=8, block=16, itrs=3, gamma=0.5, tau=0.5, beta=1.0, seed=99)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=64)
    c.compact(seq, "balancekv", **params)
    assert_matches_port(c, seq, port(K, V, **params), "gamma/tau/beta")
    c.release(seq)


def test_seed_determinism(c):
    K, V = random_kv(5, 4 + 120 + 4)
    kept = {}
    for run, seed in enumerate([11, 11, 12]):
        seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=64)
        c.compact(seq, "balancekv", seed=seed, **SMALL)
        kept[run] = [(h.positions.tolist(), h.log_weights.tolist()) for h in c.query(seq, mode="metadata")]
        c.release(seq)
    assert kept[0] == kept[1], "same seed, different result"
    assert kept[0] != kept[2], "seeds 11 and 12 keep the same tokens in every head"
    # heads draw independent streams: with one seed the heads do not all keep the same positions
    assert len({tuple(p) for p, _ in kept[0]}) > 1


# ---------------------------------------------------------------------------------------------
# Log-weights across later operations

def test_log_weights_survive_append_and_recompaction(c):
    K, V = random_kv(6, 4 + 120 + 4)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=64)
    c.compact(seq, "balancekv", seed=5, **SMALL)
    first = c.query(seq, mode="inline", copy=True)
    assert_matches_port(c, seq, port(K, V, seed=5, **SMALL), "first")

    # append (inline and zero-copy): new tokens weight 0, old ones unchanged
    K2, V2 = random_kv(7, 40)
    c.append(seq, K2[:, :, :24], V2[:, :, :24])
    c.append(seq, K2[:, :, 24:], V2[:, :, 24:], zero_copy=True)
    after = c.query(seq, mode="inline", copy=True)
    for a, b in zip(first, after):
        assert b.num_tokens == a.num_tokens + 40
        assert b.log_weights[:a.num_tokens].view(np.uint32).tolist() == a.log_weights.view(np.uint32).tolist()
        assert b.log_weights[a.num_tokens:].view(np.uint32).tolist() == [0] * 40
        assert b.positions[a.num_tokens:].tolist() == list(range(128, 168))
        assert np.array_equal(b.keys[a.num_tokens:], K2[b.layer, b.head])

    # a second BalanceKV run multiplies its weights in: log-weights add (walk weighted by e^old)
    refs = rs.balancekv_reference([h.keys for h in after], [h.values for h in after],
                                  [h.log_weights for h in after], seed=8, **SMALL)
    c.compact(seq, "balancekv", seed=8, **SMALL)
    assert_matches_port(c, seq, refs, "second balancekv", [h.positions for h in after])
    second = c.query(seq, mode="inline", copy=True)
    for a, b in zip(after, second):
        pos_a = {p: w for p, w in zip(a.positions.tolist(), a.log_weights.tolist())}
        mid = b.positions[4:-4]
        got = b.log_weights[4:-4]
        delta = got - np.float32([pos_a[p] for p in mid.tolist()])
        assert np.all(np.isclose(delta, np.log(2.0)) | np.isclose(delta, np.log(4.0)) | (delta == 0)), delta

    # SnapKV keeps the existing weights of the tokens it keeps
    n = list(second)[0].num_tokens
    Q = np.random.default_rng(9).standard_normal((L, HQ, 4, D)).astype(np.float32)
    c.compact(seq, "snapkv", queries=Q, budget=10)
    third = c.query(seq, mode="metadata")
    for a, b in zip(second, third):
        assert b.num_tokens == 14
        pos_a = {p: w for p, w in zip(a.positions.tolist(), a.log_weights.view(np.uint32).tolist())}
        assert b.log_weights.view(np.uint32).tolist() == [pos_a[p] for p in b.positions.tolist()]
        assert b.positions[-4:].tolist() == a.positions[n - 4:].tolist()
    c.release(seq)


# ---------------------------------------------------------------------------------------------
# Attention-output error: balanced vs uniform vs SnapKV at equal size

SINKS, RECENT, MIDDLE = 16, 16, 256
ERRORS = {}


def clustered(seed, n, key_scale=1.0, noise=0.5):
    """8 clusters per head: keys = centre·key_scale + noise, values = the cluster's value + noise;
    observation queries (for SnapKV) and held-out queries from the same Gaussian."""
    rng = np.random.default_rng(seed)
    K = np.empty((L, H, n, D))
    V = np.empty((L, H, n, D))
    for l in range(L):
        for h in range(H):
            centres = rng.standard_normal((8, D)) * key_scale
            vcentres = rng.standard_normal((8, D)) * 2
            label = rng.integers(0, 8, n)
            K[l, h] = centres[label] + noise * rng.standard_normal((n, D))
            V[l, h] = vcentres[label] + noise * rng.standard_normal((n, D))
    q_obs = rng.standard_normal((L, HQ, RECENT, D))
    q_held = rng.standard_normal((L, HQ, 32, D))
    return (K.astype(np.float32), V.astype(np.float32), q_obs.astype(np.float32),
            q_held.astype(np.float32))


def output_error(c, seq, K, q_held):
    errs = []
    for i, hd in enumerate(c.query(seq, mode="inline", copy=True)):
        l, h = divmod(i, H)
        qs = q_held[l, h * G:(h + 1) * G].reshape(-1, D)
        errs.append(rs.attention_error(qs, K[0][l, h], K[1][l, h], hd.keys, hd.values, hd.log_weights))
    return float(np.mean(errs))


def test_attention_error_balanced_beats_uniform(c):
    n = SINKS + MIDDLE + RECENT
    kept_total = SINKS + MIDDLE // 4 + RECENT
    errs = {"balanced": [], "uniform": [], "snapkv": []}
    for s in range(8):
        K, V, q_obs, q_held = clustered(100 + s, n)
        for variant in errs:
            seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=512)
            if variant == "snapkv":
                # same total size: budget = sinks + kept middle, window = the RECENT observation queries
                c.compact(seq, "snapkv", queries=q_obs, budget=SINKS + MIDDLE // 4)
            else:
                c.compact(seq, "balancekv", sinks=SINKS, recent=RECENT, seed=s, variant=variant)
            assert all(hd.num_tokens == kept_total for hd in c.query(seq, mode="metadata"))
            errs[variant].append(output_error(c, seq, (K, V), q_held))
            c.release(seq)
    mean = {k: float(np.mean(v)) for k, v in errs.items()}
    ERRORS.update(mean)
    print(f"\nBalanceKV attention-output error over 8 seeds (kept {kept_total} of {n}): "
          + ", ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    assert mean["balanced"] < mean["uniform"], mean


# ---------------------------------------------------------------------------------------------
# Refused input

@pytest.mark.parametrize("params", [
    dict(itrs=0),
    dict(block=48),
    dict(block=3),
    dict(sinks=4, recent=4, itrs=2, n=4 + 3 + 4),    # middle 3 < 2^2
    dict(sinks=64, recent=64, itrs=1, n=128),         # no middle at all
    dict(variant="random"),
    dict(seed=-1),
], ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_bad_input(c, params):
    params = dict(params)
    n = params.pop("n", 128)
    K, V = random_kv(8, n)
    seq = fill_sequence(c, MODEL_SEED_F32, K, V, chunk=64)
    before = sequence_snapshot(c, seq)
    with pytest.raises(KvdError) as e:
        c.compact(seq, "balancekv", **params)
    assert e.value.code == ErrorCode.INVALID_ARGUMENT, e.value
    assert sequence_snapshot(c, seq) == before
    c.release(seq)
