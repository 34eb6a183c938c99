"""The statistics of the quality report, in plain Python + NumPy (no SciPy at run time; the unit
tests check every function against ``scipy.stats``).

* :func:`wilson`: the 95 % Wilson score interval of a proportion (needle accuracy of a cell).
* :func:`mcnemar_exact`: two methods answered the same needle prompts; the exact two-sided McNemar
  test is the two-sided binomial test of the discordant pairs (one right, the other wrong) at 1/2.
* :func:`sign_test` and :func:`wilcoxon_exact`: paired KL values of two methods on the same texts.
  The report uses the Wilcoxon signed-rank test, exact (all 2ⁿ sign assignments, n ≤ 20), because
  it uses the sizes of the differences and so can reach p < 0.05 with fewer pairs than the sign
  test (n = 6 pairs at the least: 2/2⁶ = 0.031; the sign test needs the same n but only when every
  pair agrees, and it ignores how large they are). With n = 4 texts no two-sided test on 4 pairs
  can reach 0.05 (the smallest exact p is 2/2⁴ = 0.125); that is why the tables pool the texts of
  all lengths (16 pairs) for the paired comparisons and name the test and n.
* :func:`mean_ci`: mean and 95 % t interval (the KL of a method over texts).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054
# 97.5 % t quantiles for df = 1..30 (beyond: an expansion around the normal's).
_T975 = [12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851,
         2.364624252, 2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830,
         2.160368656, 2.144786688, 2.131449546, 2.119905299, 2.109815578, 2.100922040,
         2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.068657610, 2.063898562,
         2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456]


def wilson(k: int, n: int, z: float = Z95) -> tuple:
    """``(low, high)`` of the Wilson score interval for ``k`` successes in ``n`` trials."""
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= k <= n:
        raise ValueError(f"need 0 ≤ k ≤ n, got k={k}, n={n}")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test of ``k`` of ``n`` at p = 1/2 (symmetric: 2 × the smaller
    tail, capped at 1)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_exact(a: list, b: list) -> dict:
    """Paired booleans (method A, method B on the same prompts): discordant counts and the exact
    two-sided p."""
    if len(a) != len(b):
        raise ValueError("paired outcomes need equal lengths")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    return {"a_only": a_only, "b_only": b_only, "n": len(a),
            "p": binom_two_sided(a_only, a_only + b_only)}


def sign_test(d: list) -> dict:
    """Exact two-sided sign test on paired differences (zeros dropped)."""
    pos = sum(1 for x in d if x > 0)
    neg = sum(1 for x in d if x < 0)
    return {"pos": pos, "neg": neg, "p": binom_two_sided(pos, pos + neg)}


def _ranks(v: list) -> list:
    """Average ranks (1-based) of ``v``."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for t in range(i, j + 1):
            r[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return r


def wilcoxon_exact(d: list, max_n: int = 20) -> dict:
    """Exact two-sided Wilcoxon signed-rank test on paired differences ``d`` (zeros dropped,
    average ranks for ties): the statistic is the smaller of W+ and W−, the p the share of the 2ⁿ
    sign assignments whose min(W+, W−) is at most the observed one."""
    d = [x for x in d if x != 0]
    n = len(d)
    if n == 0:
        return {"n": 0, "w_plus": 0.0, "w_minus": 0.0, "p": 1.0}
    if n > max_n:
        raise ValueError(f"exact Wilcoxon enumerates 2^n sign patterns; n={n} > {max_n}")
    r = _ranks([abs(x) for x in d])
    wp = sum(ri for ri, x in zip(r, d) if x > 0)
    total = sum(r)
    obs = min(wp, total - wp)
    # Distribution of W+ over all sign patterns (ranks may be halves: work in doubled units).
    r2 = [int(round(2 * x)) for x in r]
    counts = {0: 1}
    for x in r2:
        nxt = dict(counts)
        for s, c in counts.items():
            nxt[s + x] = nxt.get(s + x, 0) + c
        counts = nxt
    tot2 = int(round(2 * total))
    obs2 = int(round(2 * obs))
    extreme = sum(c for s, c in counts.items() if min(s, tot2 - s) <= obs2)
    return {"n": n, "w_plus": wp, "w_minus": total - wp, "p": min(1.0, extreme / 2 ** n)}


def t975(df: int) -> float:
    if df < 1:
        return float("nan")
    if df <= len(_T975):
        return _T975[df - 1]
    # Beyond the table: the Cornish–Fisher expansion of t around the normal (error < 1e-4 here).
    z = Z95
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df)


def mean_ci(x: list) -> tuple:
    """``(mean, low, high)``: the 95 % t interval of the mean (nan bounds for one value)."""
    n = len(x)
    if n == 0:
        return (float("nan"),) * 3
    m = sum(x) / n
    if n == 1:
        return (m, float("nan"), float("nan"))
    sd = math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1))
    h = t975(n - 1) * sd / math.sqrt(n)
    return (m, m - h, m + h)


def mean_sd(x: list) -> tuple:
    n = len(x)
    if n == 0:
        return (float("nan"), float("nan"))
    m = sum(x) / n
    return (m, math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1)) if n > 1 else float("nan"))


__all__ = ["wilson", "binom_two_sided", "mcnemar_exact", "sign_test", "wilcoxon_exact", "mean_ci",
           "mean_sd", "t975"]
