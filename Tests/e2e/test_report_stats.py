"""The quality report's statistics (kvd_transformers.report.stats) against scipy.stats and a
hand-written Wilson formula; no daemon, no model."""

from __future__ import annotations

import math
import random

import pytest

stats_mod = pytest.importorskip("scipy.stats")

from kvd_transformers.report import stats  # noqa: E402


def wilson_by_hand(k, n, z=1.959963984540054):
    # Wilson (1927): (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    den = 1 + z * z / n
    return (centre - half) / den, (centre + half) / den


@pytest.mark.parametrize("k,n", [(0, 20), (1, 20), (10, 20), (17, 20), (20, 20), (3, 3), (40, 80)])
def test_wilson_matches_formula_and_scipy(k, n):
    lo, hi = stats.wilson(k, n)
    elo, ehi = wilson_by_hand(k, n)
    assert lo == pytest.approx(max(elo, 0.0), abs=1e-12)
    assert hi == pytest.approx(min(ehi, 1.0), abs=1e-12)
    ci = stats_mod.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        stats.wilson(5, 4)
    assert all(math.isnan(x) for x in stats.wilson(0, 0))


@pytest.mark.parametrize("k,n", [(0, 0), (0, 5), (1, 9), (3, 10), (7, 10), (12, 30), (15, 30)])
def test_binomial_two_sided_matches_scipy(k, n):
    want = 1.0 if n == 0 else stats_mod.binomtest(k, n, 0.5).pvalue
    assert stats.binom_two_sided(k, n) == pytest.approx(want, rel=1e-12)


def test_mcnemar_counts_discordant_pairs_only():
    a = [True] * 8 + [False] * 2 + [True] * 5 + [False] * 5
    b = [False] * 8 + [True] * 2 + [True] * 5 + [False] * 5
    r = stats.mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"], r["n"]) == (8, 2, 20)
    assert r["p"] == pytest.approx(stats_mod.binomtest(8, 10, 0.5).pvalue)
    # Concordant pairs do not move the p.
    r2 = stats.mcnemar_exact(a + [True] * 50, b + [True] * 50)
    assert r2["p"] == r["p"]
    assert stats.mcnemar_exact([True], [True])["p"] == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar_exact([True], [])


@pytest.mark.parametrize("seed", range(12))
def test_wilcoxon_exact_matches_scipy(seed):
    rng = random.Random(seed)
    n = rng.randint(3, 16)
    d = [rng.gauss(0.3 if seed % 2 else 0.0, 1.0) for _ in range(n)]
    got = stats.wilcoxon_exact(d)
    want = stats_mod.wilcoxon(d, alternative="two-sided", method="exact")
    assert got["p"] == pytest.approx(want.pvalue, rel=1e-9)
    assert min(got["w_plus"], got["w_minus"]) == pytest.approx(want.statistic)


def test_wilcoxon_all_positive_is_two_over_two_to_n():
    d = [0.1 * (i + 1) for i in range(6)]
    assert stats.wilcoxon_exact(d)["p"] == pytest.approx(2 / 2 ** 6)
    assert stats.wilcoxon_exact([1, 2, 3, 4])["p"] == pytest.approx(0.125)
    assert stats.wilcoxon_exact([0, 0])["p"] == 1.0


def test_wilcoxon_ties_match_scipy_exact_enumeration():
    # Tied |d| get average ranks; scipy's exact method assumes no ties, so compare against a
    # direct enumeration instead.
    d = [0.5, -0.5, 1.0, 1.0, 2.0, -0.25, 3.0]
    got = stats.wilcoxon_exact(d)
    ranks = stats_mod.rankdata([abs(x) for x in d])
    wp = sum(r for r, x in zip(ranks, d) if x > 0)
    obs = min(wp, ranks.sum() - wp)
    import itertools
    hits = 0
    for signs in itertools.product([0, 1], repeat=len(d)):
        s = sum(r for r, sg in zip(ranks, signs) if sg)
        hits += min(s, ranks.sum() - s) <= obs + 1e-12
    assert got["p"] == pytest.approx(hits / 2 ** len(d))


def test_sign_test_matches_binomtest():
    d = [0.2, 0.1, -0.05, 0.3, 0.0, 0.4, 0.5, 0.1]
    r = stats.sign_test(d)
    assert (r["pos"], r["neg"]) == (6, 1)
    assert r["p"] == pytest.approx(stats_mod.binomtest(6, 7, 0.5).pvalue)


@pytest.mark.parametrize("n", [2, 4, 5, 16, 40, 200])
def test_mean_ci_matches_scipy_t(n):
    rng = random.Random(n)
    x = [rng.expovariate(10) for _ in range(n)]
    m, lo, hi = stats.mean_ci(x)
    res = stats_mod.ttest_1samp(x, 0).confidence_interval(0.95)
    tol = 1e-8 if n <= 31 else 1e-4  # beyond df 30: the Cornish-Fisher expansion
    assert (lo, hi) == pytest.approx((res.low, res.high), rel=tol)
    assert m == pytest.approx(sum(x) / n)
    assert math.isnan(stats.mean_ci([1.0])[1])


def test_grid_summary_on_synthetic_rows():
    from kvd_transformers.report import grid_doc

    rows = []
    for i in range(20):
        for m, hit in (("full", True), ("headkv", True), ("snapkv", i < 10), ("streamingllm", False)):
            rows.append({"kind": "numbers", "length": 512, "index": i, "method": m, "hit": hit})
    for L in (512, 1024, 2048, 4096):
        for t in range(4):
            for m, kl in (("full", 0.0), ("headkv", 0.01 + 0.001 * t), ("snapkv", 0.02 + 0.002 * t),
                          ("streamingllm", 0.05), ("dbudgetkv default", 0.004 + 0.001 * t),
                          ("kvsharer shipped", 0.06)):
                rows.append({"kind": "kl", "length": L, "index": t, "method": m, "seed": None,
                             "kl_mean": kl, "kv_fraction": 0.6 if m == "dbudgetkv default" else 0.1,
                             "attn_err": kl})
    s = grid_doc.summarize(rows)
    acc = {e["method"]: e for e in s["needles"]}
    assert (acc["snapkv"]["k"], acc["snapkv"]["n"]) == (10, 20)
    assert (acc["snapkv"]["lo"], acc["snapkv"]["hi"]) == pytest.approx(stats.wilson(10, 20))
    t = {(x["a"], x["b"], x["length"]): x for x in s["needle_tests"]}
    hs = t[("headkv", "snapkv", "all")]
    assert (hs["a_only"], hs["b_only"]) == (10, 0)
    assert hs["p"] == pytest.approx(stats_mod.binomtest(10, 10).pvalue)
    kt = {(x["a"], x["b"]): x for x in s["kl_tests"]}
    assert kt[("headkv", "snapkv")]["n"] == 16 and kt[("headkv", "snapkv")]["a_lower"] == 16
    assert kt[("headkv", "snapkv")]["p"] == pytest.approx(2 / 2 ** 16)
    assert all(e["meets"] and e["meets_ci"] for e in s["dbudget"])  # KL ≤ 0.02, 40 % dropped
    assert not any(e["meets"] for e in s["sharer"])
    md = grid_doc.markdown("m", s, {"alias_map": "25:13"}, 128)
    assert "| headkv vs snapkv | numbers | all | 10 | 0 | 0.002 | **yes** | holds (significant) |" in md


def test_docs_block_replaced_and_note_kept(tmp_path):
    from kvd_transformers.report import grid_doc

    doc = tmp_path / "Q.md"
    doc.write_text("# Title\n\nbody\n")
    grid_doc.insert_docs(doc, "first")
    text = doc.read_text()
    assert text.startswith("# Title\n\n" + grid_doc.BEGIN) and text.rstrip().endswith("body")
    text = text.replace(f"{grid_doc.NOTE_BEGIN}\n", f"{grid_doc.NOTE_BEGIN}\nhand-written\n")
    doc.write_text(text)
    grid_doc.insert_docs(doc, "second")
    text = doc.read_text()
    assert "first" not in text and "second" in text and "hand-written" in text
    assert text.count(grid_doc.BEGIN) == 1 and text.count("body") == 1
