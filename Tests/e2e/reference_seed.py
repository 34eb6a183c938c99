"""Independent NumPy references for DBudgetKV, BalanceKV and KVSharer (the papers in Plugins/README.md plus the
choices kvd documents in its plugins), used by test_dbudgetkv.py, test_balancekv.py and
test_kvsharer.py.

* DBudgetKV: H2O ranking (window attention, no pooling, from the last ``rank_window`` queries) or
  any given ranking; the last query's attention a_h; the per-layer cut i* of the ℓ2 or ℓ1 stop
  with the first ``sinks`` tokens outside it; floors = candidates − i*. Float64, with the
  distance of every deciding ratio from T reported so a test can tell a real disagreement from a
  float32 near-tie.
* BalanceKV: SplitMix64 and a port of the weighted halving walk, in float32 where kvd computes in
  float32 (Gram matrices, exp kernel, sequential partial sums) — or in float64 for a margin check.
* KVSharer: the layer-pair distance ranking.

Shapes as in reference.py: keys [L, H, n, d], queries [L, Hq, w, d], heads layer-major.
"""

from __future__ import annotations

import math

import numpy as np

import reference as ref

MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------
# SplitMix64

class SplitMix64:
    """Steele, Lea & Flood's SplitMix64 on Python integers (wrapping at 2^64)."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def unit(self) -> float:
        """Uniform in [0, 1) from the top 24 bits (exact in float32)."""
        return (self.next() >> 40) / float(1 << 24)


def balancekv_generator(seed: int, head: int) -> SplitMix64:
    """Head ``head``'s stream: seed + head·0xD1B54A32D192ED03 (mod 2^64)."""
    return SplitMix64((seed + head * 0xD1B54A32D192ED03) & MASK64)


# ---------------------------------------------------------------------------------------------
# BalanceKV

def balanced_walk(keys, values, weights, *, block: int, rounds: int, gamma: float, tau: float,
                  beta: float, uniform: bool, rng: SplitMix64, dtype=np.float32):
    """The halving rounds on one head's middle tokens ``keys``/``values`` [m, d] with current
    weights ``weights`` [m]. Returns (kept indices into the middle in the walk's final order, the
    product of round weights per kept token, the smallest |p_i − u_i| over draws with 0 < p_i < 1)."""
    f = np.dtype(dtype).type
    keys = np.asarray(keys, dtype)
    values = np.asarray(values, dtype)
    weights = np.asarray(weights, dtype)
    m, d = keys.shape
    order = np.arange(m)
    run = np.ones(m, dtype)
    scale = f(tau) / np.sqrt(f(d))
    margin = math.inf
    for _ in range(rounds):
        n = order.size
        padded = (n + block - 1) // block * block
        draws = np.array([rng.unit() for _ in range(padded)], dtype)
        signs = np.zeros(padded, np.int64)
        kall = np.zeros((padded, d), dtype)
        vall = np.zeros((padded, d), dtype)
        kall[:n] = keys[order]
        vall[:n] = (values[order] * weights[order][:, None]) * run[:, None]
        for start in range(0, padded, block):
            k = kall[start:start + block].copy()
            v = vall[start:start + block]
            mean = np.cumsum(k, axis=0, dtype=dtype)[-1] / f(block)  # sequential, like kvd
            k = k - mean
            if not uniform:
                gk = k @ k.T
                gv = v @ v.T
            signs[start] = 1
            for r in range(1, block):
                if uniform:
                    p = f(0.5)
                else:
                    kern = (np.exp(scale * gk[r, :r] - f(beta))
                            * ((f(1e-8) + gv[r, :r]) + f(0.025))).astype(dtype)
                    partial = np.cumsum(kern * signs[start:start + r].astype(dtype), dtype=dtype)[-1]
                    p = f(0.5) - f(gamma) * partial
                u = draws[start + r]
                if 0 < p < 1:
                    margin = min(margin, abs(float(p) - float(u)))
                signs[start + r] = 1 if u < p else -1
        half = n // 2
        neg = pos = 0
        c_neg = c_pos = 0
        neg_done = pos_done = False
        for i in range(n):
            if signs[i] < 0:
                neg += 1
            else:
                pos += 1
            if not neg_done and neg == half:
                c_neg, neg_done = i, True
            if not pos_done and pos == half:
                c_pos, pos_done = i, True
        c = max(c_neg, c_pos)
        flip = -1 if signs[c] == 1 else 1
        weight = np.array([1 if i > c else 2 * signs[i] * flip for i in range(n)], dtype)
        ranked = sorted(range(n), key=lambda i: (-weight[i], i))[:half]
        order = order[ranked]
        run = (run[ranked] * weight[ranked]).astype(dtype)
    return order, run, margin


def balancekv_head(keys, values, log_weights, h: int, *, sinks=32, recent=32, itrs=2, block=128,
                   gamma=4.0, tau=1.0, beta=0.0, seed=1234, variant="balanced", dtype=np.float32):
    """One head: (kept indices sorted, their log-weights as float32, walk margin)."""
    keys = np.asarray(keys, np.float32)
    values = np.asarray(values, np.float32)
    old = np.asarray(log_weights, np.float32)
    n = keys.shape[0]
    lo, hi = sinks, n - recent
    mw = np.exp(old[lo:hi]).astype(np.float32)
    order, w, margin = balanced_walk(keys[lo:hi], values[lo:hi], mw, block=block, rounds=itrs,
                                     gamma=gamma, tau=tau, beta=beta, uniform=variant == "uniform",
                                     rng=balancekv_generator(seed, h), dtype=dtype)
    idx = np.argsort(order, kind="stable")
    mid, mid_w = order[idx], np.asarray(w, np.float32)[idx]
    kept = np.concatenate([np.arange(lo), lo + mid, np.arange(hi, n)]).astype(np.int64)
    logs = np.concatenate([old[:lo], (old[lo + mid] + np.log(mid_w)).astype(np.float32),
                           old[hi:]]).astype(np.float32)
    return kept, logs, margin


def balancekv_reference(heads_k, heads_v, heads_lw, **params):
    """Per head (kept, log-weights, margin) for layer-major lists of per-head arrays."""
    return [balancekv_head(k, v, lw, h, **params)
            for h, (k, v, lw) in enumerate(zip(heads_k, heads_v, heads_lw))]


# ---------------------------------------------------------------------------------------------
# DBudgetKV

def stop_attention(Kh, Qg, last: int = 1, log_weights=None) -> np.ndarray:
    """Mean over the group's query heads and the window's last ``last`` queries (0, or more than
    the window: all) of softmax(q·Kᵀ/√d + log-weights), causal (the window's queries are its last
    tokens, so the last query sees all n). ``Qg`` [G, w, d]."""
    Kh = np.asarray(Kh, np.float64)
    Qg = np.asarray(Qg, np.float64)
    w = Qg.shape[1]
    r = w if last <= 0 or last > w else last
    n = Kh.shape[0]
    q = Qg[:, w - r:, :].reshape(-1, Kh.shape[1])
    logits = q @ Kh.T / math.sqrt(Kh.shape[1])
    if log_weights is not None:
        logits = logits + np.asarray(log_weights, np.float64)[None, :]
    # causal: the i-th of the last r queries sits at token n − r + i and sees tokens ≤ it
    seen = np.arange(n)[None, :] <= (n - r + np.arange(r))[:, None]
    logits = np.where(np.tile(seen, (Qg.shape[0], 1)), logits, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).mean(axis=0)


def prune_order(scores, sinks: int = 0) -> list:
    """π: the candidates (positions ≥ ``sinks``) by score ascending, ties by position descending;
    NaN counts as −∞ (the lowest score, as in the top-k selection)."""
    s = np.asarray(scores, np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    return sorted(range(min(sinks, s.size), s.size), key=lambda j: (s[j], -j))


def rank_window_scores(Kh, Qg, rank_window: int, window: int, log_weights=None) -> np.ndarray:
    """DBudgetKV's own ranking: window attention from the last ``rank_window`` of the ``window``
    queries (0, or more than ``window``: all), reported for the ``n − window`` prefix tokens."""
    Qg = np.asarray(Qg, np.float64)
    r = window if rank_window <= 0 or rank_window > window else rank_window
    n = np.asarray(Kh).shape[0]
    return ref.head_window_scores(Kh, Qg[:, window - r:, :], log_weights)[:n - window]


def dbudget_floors(K, Q, threshold: float, *, scores=None, log_weights=None, norm: str = "l2",
                   sinks: int = 0, rank_window: int = 0, stop_window: int = 1, pooling: str = "none",
                  kernel: int = 1):
    """DBudgetKV's floors per (layer, head). ``K`` [L, H, n, d] or a layer-major list of per-head
    arrays [n_h, d] (then L is taken from Q); ``scores``: the ranking per head (default: H2O window
    scores from the last ``rank_window`` queries, 0 = all). ``norm``: ``l2`` (‖·‖₂) or ``l1`` (sum)
    of the stop's attention over the candidates, which is the mean attention of the last
    ``stop_window`` queries (1: the last query alone, the paper's; 0: all); ``sinks``: the first
    tokens, kept and left out of the norm and of the floors; ``pooling``/``kernel`` smooth the
    ranking's scores (SnapKV's pooling, not the stop's attention). Returns (floors, cuts per layer,
    scores, margin) where margin is the smallest |ratio − T| over the ratios the scan compared (a
    float32 implementation can only disagree when it is tiny)."""
    heads = ref._head_list(K)
    Q = np.asarray(Q, np.float64)
    L, Hq, w, _ = Q.shape
    H = len(heads) // L
    G = Hq // H
    p = {"l2": 2, "l1": 1}[norm]
    if scores is None:
        scores = [ref.pool(rank_window_scores(heads[i], Q[i // H, (i % H) * G:(i % H + 1) * G], rank_window, w,
                                              None if log_weights is None else log_weights[i]),
                           pooling, kernel)
                  for i in range(L * H)]
    floors, cuts = [], []
    margin = math.inf
    for l in range(L):
        suffixes, cands = [], []
        for hh in range(H):
            i = l * H + hh
            n = heads[i].shape[0]
            prefix = max(0, n - w)
            cands.append(max(0, prefix - sinks))
            if prefix - sinks <= 0:
                suffixes.append(np.zeros(1))
                continue
            a = stop_attention(heads[i], Q[l, hh * G:(hh + 1) * G], stop_window,
                               None if log_weights is None else log_weights[i])
            order = prune_order(np.asarray(scores[i])[:prefix], sinks)
            x = a[order] ** p
            suffixes.append(np.concatenate([np.cumsum(x[::-1])[::-1], [0.0]]))
        longest = max(cands)

        def kept(i):
            return sum(s[min(i, s.size - 1)] ** (1.0 / p) for s in suffixes) / len(suffixes)

        base = kept(0)
        cut = 0
        if base <= 0:
            cut = longest
        else:
            while cut < longest:
                ratio = (base - kept(cut + 1)) / base
                margin = min(margin, abs(ratio - threshold))
                if ratio > threshold:
                    break
                cut += 1
        cuts.append(cut)
        floors.extend(max(c - cut, 0) for c in cands)
    return floors, cuts, scores, margin


# ---------------------------------------------------------------------------------------------
# KVSharer

def layer_distance_ranking(Ks, Vs):
    """``Ks``/``Vs``: lists of [L, H, n, d] arrays (one per calibration sequence). Returns
    [(layer, other, distance)] for every pair layer > other, most dissimilar first, ties by
    (layer, other) ascending."""
    Kbar = np.mean([np.asarray(k, np.float64) for k in Ks], axis=0)
    Vbar = np.mean([np.asarray(v, np.float64) for v in Vs], axis=0)
    L = Kbar.shape[0]

    def mean_row(a, b):
        return float(np.sqrt(((a - b) ** 2).sum(axis=-1)).mean())

    pairs = [(i, j, 0.5 * (mean_row(Kbar[i], Kbar[j]) + mean_row(Vbar[i], Vbar[j])))
             for i in range(L) for j in range(i)]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


# ---------------------------------------------------------------------------------------------
# Attention-output error

def attention_error(q_heads, full_k, full_v, kept_k, kept_v, kept_lw) -> float:
    """‖Attn(q, K, V) − Attn_biased(q, K′, V′)‖_F / ‖Attn(q, K, V)‖_F over the query rows ``q_heads``
    [m, d] of one KV head (float64)."""
    from kvd.attention import attention_arrays
    full = attention_arrays(q_heads, full_k, full_v)
    approx = attention_arrays(q_heads, kept_k, kept_v, kept_lw)
    return float(np.linalg.norm(full - approx) / np.linalg.norm(full))
