"""Independent NumPy reference of kvd's compaction methods (from the papers listed in Plugins/README.md and the
documented choices of kvd), used by the end-to-end tests.

Everything is computed in float64 (scores) or exactly with ``fractions.Fraction`` (budget shares),
so a disagreement with the daemon is either a near-tie that float32 may resolve either way (see
:func:`check_topk`) or a real difference.

Shapes: keys ``K`` are ``[layers, kv_heads, n, head_dim]``; observation queries ``Q`` are
``[layers, q_heads, w, head_dim]``; per-head results are lists indexed layer-major
(``l * kv_heads + h``).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

# Relative closeness under which two scores count as tied (kvd scores in float32 with sgemm).
NEAR_TIE_RTOL = 1e-5
NEAR_TIE_ATOL = 1e-12

# Method presets: (scorer, default pooling, default kernel, allocator).
PRESETS = {
    "knorm": ("knorm", None, None, "uniform"),
    "snapkv": ("window", "avg", 5, "uniform"),
    "h2o": ("window", "none", 1, "uniform"),
    "pyramidkv": ("window", "avg", 5, "pyramidkv"),
    "adakv": ("window", "max", 7, "adakv"),
    "headkv": ("window", "max", 7, "headkv"),
}
# Scorer names a config policy may compose (Catalog.scorers).
SCORER_PRESETS = {
    "snapkv": ("window", "avg", 5), "window_attention": ("window", "avg", 5),
    "h2o": ("window", "none", 1), "headkv": ("window", "max", 7), "knorm": ("knorm", None, None),
}
QUERY_METHODS = {"snapkv", "h2o", "pyramidkv", "adakv", "headkv"}


# ---------------------------------------------------------------------------------------------
# Scores

def head_window_scores(Kh: np.ndarray, Qg: np.ndarray, log_weights=None) -> np.ndarray:
    """Window attention of one KV head holding ``n`` tokens (keys ``Kh`` [n, d]) with the window
    queries of its group ``Qg`` [G, w, d]: softmax(q·kᵀ/√d + log-weights) per query row, query i of
    the window at index n − w + i seeing tokens ≤ n − w + i; score = mean over the G·w rows, for
    tokens [0, n − w)."""
    Kh = np.asarray(Kh, np.float64)
    Qg = np.asarray(Qg, np.float64)
    n, d = Kh.shape
    G, w, _ = Qg.shape
    assert 1 <= w <= n
    mask = np.arange(n)[None, :] <= (n - w + np.arange(w))[:, None]
    logits = Qg.reshape(G * w, d) @ Kh.T / math.sqrt(d)
    if log_weights is not None:
        logits = logits + np.asarray(log_weights, np.float64)[None, :]
    logits = np.where(np.tile(mask, (G, 1)), logits, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    a = e / e.sum(axis=1, keepdims=True)
    return a[:, :n - w].mean(axis=0)


def window_attention_scores(K, Q: np.ndarray) -> list:
    """Window attention per (layer, KV head), layer-major. ``K``: [L, H, n, d], or a layer-major
    list of per-head key arrays [n_h, d] (heads may hold different counts). GQA: query heads
    h·G … h·G + G − 1 share KV head h."""
    Q = np.asarray(Q, np.float64)
    Lq, Hq = Q.shape[:2]
    heads = _head_list(K)
    H = len(heads) // Lq
    G = Hq // H
    # An aliased layer's heads hold nothing (KVSharer): no tokens, no scores.
    return [head_window_scores(heads[i], Q[i // H, (i % H) * G:(i % H + 1) * G])
            if heads[i].shape[0] else np.zeros(0) for i in range(len(heads))]


def key_norm_scores(K, window: int) -> list:
    """knorm: score = −‖k_t‖₂ for the tokens before the window."""
    return [-np.sqrt((k[:k.shape[0] - window] ** 2).sum(axis=1)) for k in _head_list(K)]


def _head_list(K) -> list:
    if isinstance(K, np.ndarray) and K.ndim == 4:
        return [np.asarray(K[l, h], np.float64) for l in range(K.shape[0]) for h in range(K.shape[1])]
    return [np.asarray(k, np.float64) for k in K]


def pool(x: np.ndarray, kind: str, kernel: int) -> np.ndarray:
    """Stride-1 "same" pooling over [i − k//2, i + k//2] clipped to the array: ``avg`` sums the
    clipped range and divides by k (zero padding counted), ``max`` takes its maximum."""
    x = np.asarray(x, np.float64)
    if kind == "none" or kernel <= 1 or x.size == 0:
        return x.copy()
    half = kernel // 2
    n = x.size
    out = np.empty(n)
    for i in range(n):
        seg = x[max(0, i - half):min(n, i + half + 1)]
        out[i] = seg.sum() / kernel if kind == "avg" else seg.max()
    return out


# ---------------------------------------------------------------------------------------------
# Budgets

def largest_remainder(weights, total: int) -> list:
    """Shares of ``total`` proportional to ``weights`` (exact Fractions): floors of the exact
    shares, then +1 to the largest fractional parts, ties to the lower index. No weight at all:
    spread evenly (lower indices first)."""
    w = [Fraction(x) for x in weights]
    s = sum(w)
    n = len(w)
    if n == 0:
        return []
    if s <= 0 or total <= 0:
        return [total // n + (1 if i < total % n else 0) for i in range(n)]
    exact = [x / s * total for x in w]
    shares = [math.floor(e) for e in exact]
    missing = total - sum(shares)
    order = sorted(range(n), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:missing]:
        shares[i] += 1
    return shares


def average_budget(budget: int, fraction: float, prefix: list) -> int:
    """``budget``, or round(fraction × mean prefix) when fraction > 0 (halves round up; the tests
    avoid exact halves). ``prefix`` lists the heads that hold a cache: leave out aliased layers'."""
    if fraction > 0 and prefix:
        mean = Fraction(sum(prefix), len(prefix))
        return math.floor(Fraction(fraction) * mean + Fraction(1, 2))
    return budget


def uniform_budgets(B: int, heads: int) -> list:
    return [B] * heads


def decimal(x: float) -> Fraction:
    """A float parameter as the decimal it was written as (0.2 → 1/5, not the binary double just
    above it): kvd reads parameters of ≤ 9 decimals that way."""
    return Fraction(repr(float(x)))


def pyramid_budgets(B: int, beta: float, L: int, H: int, n: int = None) -> list:
    """PyramidKV: min = B/β, max = 2B − min; if max ≥ n (the prefix before the window; the longest
    head's), max = n and min = 2B − n (the released code's clamp); b_l = max − l(max − min)/(L − 1),
    largest remainder over layers to Σ_l b_l = L·B; every head of layer l gets b_l."""
    B_ = Fraction(B)
    lo = B_ / decimal(beta)
    hi = 2 * B_ - lo
    if n is not None and hi >= n:
        hi, lo = Fraction(n), 2 * B_ - n
    per_layer = [B_] if L == 1 else [hi - l * (hi - lo) / (L - 1) for l in range(L)]
    shares = _lr_exact(per_layer, L * B)
    return [shares[i // H] for i in range(L * H)]


def _lr_exact(exact_shares, total):
    """Largest remainder when the exact shares are given directly (they already sum to total)."""
    return largest_remainder(exact_shares, total)


def adakv_budgets(scores: list, B: int, L: int, H: int, floor: float, prefix: list) -> list:
    """AdaKV: per layer, global top-(H·B) over the flattened scores of its H heads (ties: lower head,
    then lower position) gives hits_h; weight_h = hits_h(1 − f) + f·B; largest remainder to H·B;
    capped at the head's prefix."""
    out = []
    for l in range(L):
        hits = adakv_hits([scores[l * H + h] for h in range(H)], B)
        out.extend(adakv_budgets_from_hits(hits, B, floor, prefix[l * H:(l + 1) * H]))
    return out


def adakv_hits(layer_scores: list, B: int) -> list:
    H = len(layer_scores)
    entries = [(-float(s), h, t) for h in range(H) for t, s in enumerate(layer_scores[h])]
    entries.sort()
    hits = [0] * H
    for _, h, _ in entries[:min(H * B, len(entries))]:
        hits[h] += 1
    return hits


def adakv_budgets_from_hits(hits, B, floor, prefix) -> list:
    f = decimal(floor)
    weights = [h * (1 - f) + f * B for h in hits]
    shares = largest_remainder(weights, len(hits) * B)
    return [min(s, p) for s, p in zip(shares, prefix)]


def adakv_admissible_hits(layer_scores: list, B: int, rtol=NEAR_TIE_RTOL) -> list:
    """Every hits vector a float32 implementation may produce: tokens whose score is within the
    near-tie tolerance of the global cut may fall on either side of it."""
    H = len(layer_scores)
    flat = [(float(s), h) for h in range(H) for s in layer_scores[h]]
    take = min(H * B, len(flat))
    if take == 0 or take == len(flat):
        return [adakv_hits(layer_scores, B)]
    vals = sorted((s for s, _ in flat), reverse=True)
    cut = vals[take - 1]
    tol = rtol * abs(cut) + NEAR_TIE_ATOL
    sure = [0] * H
    amb = [0] * H
    for s, h in flat:
        if s > cut + tol:
            sure[h] += 1
        elif abs(s - cut) <= tol:
            amb[h] += 1
    free = take - sum(sure)
    out = []

    def rec(i, left, acc):
        if i == H:
            if left == 0:
                out.append([sure[j] + acc[j] for j in range(H)])
            return
        for k in range(min(amb[i], left) + 1):
            rec(i + 1, left - k, acc + [k])

    rec(0, free, [])
    return out


def headkv_importance(path_or_table, L: int, H: int, Hq: int, aggregate: str = "mean") -> list:
    """Importance per (layer, KV head) from a head-score JSON {"l-h": [scores]} (importance = the
    list's mean), per KV head as is, per query head aggregated (mean / max) over each group."""
    table = path_or_table
    if isinstance(path_or_table, (str, Path)):
        table = json.loads(Path(path_or_table).read_text())
    imp = {}
    for key, lst in table.items():
        l, h = (int(x) for x in key.split("-"))
        imp[(l, h)] = sum(Fraction(x) for x in lst) / len(lst)
    heads = max(h for _, h in imp) + 1
    assert heads in (H, Hq) and max(l for l, _ in imp) + 1 == L
    if heads == H:
        return [imp[(l, h)] for l in range(L) for h in range(H)]
    G = Hq // H
    out = []
    for l in range(L):
        for h in range(H):
            members = [imp[(l, h * G + g)] for g in range(G)]
            out.append(max(members) if aggregate == "max" else sum(members) / G)
    return out


def headkv_budgets(importance: list, B: int, beta: float, temperature: float, L: int, H: int) -> list:
    """HeadKV: p = imp^temperature / Σ; shared = ⌊B/β⌋, the pool shared·L·H split by largest
    remainder (ties to the lower index); b = share + (B − shared)."""
    shared = math.floor(Fraction(B) / Fraction(beta))
    if temperature == 1:
        weights = list(importance)
    else:
        weights = [Fraction(float(x) ** temperature) for x in importance]
    pool_ = largest_remainder(weights, shared * L * H)
    return [s + (B - shared) for s in pool_]


# ---------------------------------------------------------------------------------------------
# Selection

def topk(scores: np.ndarray, budget: int, window: int, n: int, sinks: int = 0) -> np.ndarray:
    """Sorted kept indices: the first ``sinks``, the ``budget`` highest scores among
    [sinks, n − window) (ties: lower position first), and the last ``window``."""
    prefix = n - window
    sink_end = min(sinks, prefix)
    cand = np.arange(sink_end, prefix)
    if budget < cand.size:
        s = np.asarray(scores, np.float64)[cand]
        order = np.lexsort((cand, -s))  # by score desc, then position asc
        cand = np.sort(cand[order[:max(budget, 0)]])
    return np.concatenate([np.arange(sink_end), cand, np.arange(prefix, n)]).astype(np.int64)


def streaming_keep(n: int, sinks: int, recent: int) -> np.ndarray:
    if n <= sinks + recent:
        return np.arange(n)
    return np.concatenate([np.arange(sinks), np.arange(n - recent, n)])


def check_topk(got, scores, budget: int, window: int, n: int, what: str = "",
               rtol: float = NEAR_TIE_RTOL, sinks: int = 0) -> None:
    """``got`` (kept positions of one head) equals the reference top-k (with the first ``sinks``
    kept outside the budget), except that tokens whose scores are near-tied (relative ``rtol``)
    with the cut score may be swapped with each other."""
    got = np.asarray(got, np.int64)
    want = topk(scores, budget, window, n, sinks)
    assert np.all(np.diff(got) > 0), f"{what}: kept positions not sorted and unique: {got.tolist()}"
    assert got.size == want.size, (f"{what}: kept {got.size} tokens, reference {want.size} "
                                   f"(budget {budget}, window {window}, n {n})")
    assert got[got.size - window:].tolist() == list(range(n - window, n)), f"{what}: window dropped"
    if np.array_equal(got, want):
        return
    prefix = n - window
    sink_end = min(sinks, prefix)
    s = np.asarray(scores, np.float64)
    kept_prefix = min(budget, prefix - sink_end)
    cut = np.sort(s[sink_end:prefix])[::-1][kept_prefix - 1] if kept_prefix > 0 else None
    g, r = set(got.tolist()), set(want.tolist())
    extra, missing = sorted(g - r), sorted(r - g)
    bad = []
    for t in extra + missing:
        if t >= prefix or t < sink_end or cut is None or abs(s[t] - cut) > rtol * abs(cut) + NEAR_TIE_ATOL:
            bad.append(t)
    assert not bad, (f"{what}: kept set differs from the reference beyond near-ties: kvd also keeps "
                     f"{extra}, reference also keeps {missing}; cut score {cut!r}; scores there: "
                     f"{ {t: float(s[t]) for t in bad if t < prefix} }")


# ---------------------------------------------------------------------------------------------
# Whole-method reference

def method_scores(method: str, K, Q, window: int, pooling=None, kernel=None) -> list:
    """Per-head (pooled) scores of a preset method or composed scorer."""
    kind, dpool, dkern = (PRESETS[method][:3] if method in PRESETS else SCORER_PRESETS[method])
    if kind == "knorm":
        return key_norm_scores(K, window)
    return [pool(x, pooling or dpool, kernel or dkern) for x in window_attention_scores(K, Q)]


def reference(method: str, K, Q=None, *, budget=128, fraction=0.0, window=0, pooling=None,
              kernel=None, beta=None, floor=0.2, temperature=1.0, scores_table=None,
              aggregate="mean", q_heads=None, allocator=None, sinks=4, recent=64, layers=None,
              aliased=()):
    """Reference (budgets, kept indices per head, scores per head) of a method. ``K`` is
    [L, H, n, d] or a layer-major list of per-head key arrays [n_h, d] (then give ``layers``);
    kept indices index each head's current tokens. ``allocator`` composes a scorer (``method``)
    with an allocator. ``aliased``: layers KVSharer aliased earlier, whose heads (empty in ``K``)
    keep nothing and get budget 0; B and every allocator then work on the other L' layers as if
    the model had only those, in depth order (Σ budgets = L'·H·B)."""
    heads = _head_list(K)
    L = layers or (np.asarray(K).shape[0] if isinstance(K, np.ndarray) else None)
    H = len(heads) // L
    counts = [k.shape[0] for k in heads]
    if method == "streamingllm":
        return None, [streaming_keep(n, sinks, recent) for n in counts], None
    w = np.asarray(Q).shape[2] if Q is not None else window
    scores = method_scores(method, heads, Q, w, pooling, kernel)
    prefix = [max(0, n - w) for n in counts]
    live = [i for i in range(L * H) if i // H not in aliased]
    Lh = len(live) // H
    lprefix = [prefix[i] for i in live]
    B = average_budget(budget, fraction, lprefix)
    alloc = allocator or PRESETS[method][3]
    if alloc == "uniform":
        lbudgets = uniform_budgets(B, Lh * H)
    elif alloc == "pyramidkv":
        lbudgets = pyramid_budgets(B, 20.0 if beta is None else beta, Lh, H, max(prefix))
    elif alloc == "adakv":
        lbudgets = adakv_budgets([scores[i] for i in live], B, Lh, H, floor, lprefix)
    elif alloc == "headkv":
        imp = headkv_importance(scores_table, L, H, q_heads or H, aggregate)
        lbudgets = headkv_budgets([imp[i] for i in live], B, 1.01 if beta is None else beta,
                                  temperature, Lh, H)
    else:
        raise ValueError(alloc)
    budgets = [0] * (L * H)
    for i, b in zip(live, lbudgets):
        budgets[i] = b
    kept = [topk(scores[i], budgets[i], w, counts[i]) if counts[i] else np.zeros(0, np.int64)
            for i in range(L * H)]
    return budgets, kept, scores
# ---------------------------------------------------------------------------------------------
# Test data

def planted_data(seed: int, L: int, H: int, Hq: int, D: int, n: int, w: int, dtype):
    """K, V [L, H, n, D] and Q [L, Hq, w, D] in ``dtype``. The queries of a KV head's group share a
    direction u; 4 random tokens before the window have keys ≈ 6u (heavy hitters)."""
    rng = np.random.default_rng(seed)
    G = Hq // H
    K = rng.standard_normal((L, H, n, D))
    V = rng.standard_normal((L, H, n, D))
    Q = rng.standard_normal((L, Hq, w, D))
    for l in range(L):
        for h in range(H):
            u = rng.standard_normal(D)
            u /= np.linalg.norm(u)
            Q[l, h * G:(h + 1) * G] += 3 * u
            heavy = rng.choice(n - w, min(4, n - w), replace=False)
            K[l, h, heavy] = 6 * u + 0.3 * rng.standard_normal((heavy.size, D))
    return K.astype(dtype), V.astype(dtype), Q.astype(dtype)


def tie_data(seed: int, L: int, H: int, Hq: int, D: int, n: int, w: int, dtype):
    """Every key of a head is one integer vector and the queries are small integers: every logit is
    an exact multiple of 1/√D (D = 16: of 1/4) in float32 too, so all tokens of a head get
    bit-identical raw scores in kvd as in the reference."""
    rng = np.random.default_rng(seed)
    K = np.empty((L, H, n, D))
    for l in range(L):
        for h in range(H):
            K[l, h] = rng.integers(-2, 3, D)
    V = rng.standard_normal((L, H, n, D))
    Q = rng.integers(-2, 3, (L, Hq, w, D)).astype(np.float64)
    return K.astype(dtype), V.astype(dtype), Q.astype(dtype)
