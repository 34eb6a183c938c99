"""The statistics grid's outputs: per model a Markdown section (``<out>/stats-<model>.md``, also
written into docs/QUALITY.md between ``<!-- stats:begin -->`` and ``<!-- stats:end -->``), the
summary JSON (``<out>/stats-<model>.json``) and two plots (``<plots>/<model>-needles.png``,
``<plots>/<model>-kl.png``).

Tests (all two-sided, α = 0.05, :mod:`.stats`): needle accuracy per cell with its 95 % Wilson
interval; two methods on the same needle prompts: exact McNemar; KL of two methods on the same
texts: exact Wilcoxon signed-rank over the (text, length) pairs; BalanceKV vs uniform: exact
Wilcoxon over the (text, seed) pairs of a length.
"""

from __future__ import annotations

import json
from pathlib import Path

from kvd_transformers.report import stats
from kvd_transformers.report.checkpoint import read_rows
from kvd_transformers.report.grid_methods import SHARED_POLICY

ALPHA = 0.05
NEEDLE_ORDER = ["full", "headkv", "snapkv", "streamingllm"]
KL_ORDER = ["full", "headkv", "snapkv", "streamingllm", "dbudgetkv default", "kvsharer shipped"]
# The paper claims, as ordered pairs (A ≥ B): tested with McNemar (needles) and Wilcoxon (KL).
CLAIM_PAIRS = [("headkv", "snapkv"), ("snapkv", "streamingllm"), ("headkv", "streamingllm")]
KL_LIMIT, DROP_MIN, SHARER_BUDGET = 0.02, 0.25, 0.05
# DBudgetKV's parameters named in its criterion table, from the daemon's Hello defaults.
DBUDGET_PARAMS = ["norm", "sinks", "threshold", "rank_window", "stop_window", "pooling", "kernel"]
BEGIN, END = "<!-- stats:begin -->", "<!-- stats:end -->"
# Hand-written discussion inside the stats block: kept when the block is regenerated.
NOTE_BEGIN, NOTE_END = "<!-- stats-discussion:begin -->", "<!-- stats-discussion:end -->"


def load(out: Path, model: str) -> list:
    rows = {}
    for p in sorted(Path(out).glob(f"grid-{model}*.jsonl")):
        rows.update(read_rows(p))
    meta = Path(out) / f"grid-{model}.meta.json"
    current = json.loads(meta.read_text()).get("scores_hash") if meta.is_file() else None
    keep = []
    for r in rows.values():
        if r["method"] == "headkv" and current and r.get("scores_hash", current) != current:
            continue
        keep.append(r)
    return relative_to_full(keep)


def relative_to_full(rows: list) -> list:
    """KV fractions relative to the full cache *as kvd holds it* on the same prompt. On a model
    with sliding-window layers (Gemma 3) kvd frees out-of-window pages without any compaction, so
    the full cache holds < 100 % of prompt × layers; a method's saving is what it drops beyond
    that (e.g. DBudgetKV's "drops ≥ 25 %"). A model without windows is unchanged (full = 1)."""
    full = {(r["kind"], r["length"], r["index"]): r["kv_fraction"] for r in rows
            if r["method"] == "full" and r.get("kv_fraction")}
    out = []
    for r in rows:
        base = full.get((r["kind"], r["length"], r["index"]))
        if base:
            r = dict(r, kv_fraction_of_prompt=r["kv_fraction"], kv_fraction=r["kv_fraction"] / base)
        out.append(r)
    return out


def models_in(out: Path) -> list:
    names = set()
    for p in Path(out).glob("grid-*.jsonl"):
        for r in read_rows(p).values():
            names.add(r["model"])
            break
    return sorted(names)


def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _sig(p: float) -> str:
    return "**yes**" if p < ALPHA else "no"


def needle_cells(rows: list) -> dict:
    """``{(kind, length, method): {index: hit}}``."""
    cells = {}
    for r in rows:
        if r["kind"] != "kl":
            cells.setdefault((r["kind"], r["length"], r["method"]), {})[r["index"]] = bool(r["hit"])
    return cells


def kl_cells(rows: list) -> dict:
    """``{(length, method label incl. seed): {text: row}}``."""
    cells = {}
    for r in rows:
        if r["kind"] == "kl":
            name = r["method"] if r.get("seed") is None else f"{r['method']}|{r['seed']}"
            cells.setdefault((r["length"], name), {})[r["index"]] = r
    return cells


def summarize(rows: list) -> dict:
    nc, kc = needle_cells(rows), kl_cells(rows)
    kinds = sorted({k for k, _, _ in nc})
    lengths = sorted({L for _, L, _ in nc} | {L for L, _ in kc})
    s = {"kinds": kinds, "lengths": lengths, "needles": [], "needle_tests": [], "kl": [],
         "kl_tests": [], "dbudget": [], "sharer": [], "balance": []}
    for kind in kinds:
        for m in NEEDLE_ORDER:
            for L in lengths:
                hits = nc.get((kind, L, m))
                if not hits:
                    continue
                k, n = sum(hits.values()), len(hits)
                lo, hi = stats.wilson(k, n)
                s["needles"].append({"kind": kind, "method": m, "length": L, "k": k, "n": n,
                                     "acc": k / n, "lo": lo, "hi": hi})
        for a, b in CLAIM_PAIRS + [("full", "headkv"), ("full", "snapkv"), ("full", "streamingllm")]:
            pooled_a, pooled_b = [], []
            for L in lengths:
                ha, hb = nc.get((kind, L, a), {}), nc.get((kind, L, b), {})
                common = sorted(set(ha) & set(hb))
                if not common:
                    continue
                xa, xb = [ha[i] for i in common], [hb[i] for i in common]
                pooled_a += xa
                pooled_b += xb
                t = stats.mcnemar_exact(xa, xb)
                s["needle_tests"].append({"kind": kind, "a": a, "b": b, "length": L, **t})
            if pooled_a:
                t = stats.mcnemar_exact(pooled_a, pooled_b)
                s["needle_tests"].append({"kind": kind, "a": a, "b": b, "length": "all", **t})
    for m in KL_ORDER:
        for L in lengths:
            texts = kc.get((L, m))
            if not texts:
                continue
            kls = [texts[t]["kl_mean"] for t in sorted(texts)]
            kv = [texts[t]["kv_fraction"] for t in sorted(texts)]
            kv_full = [texts[t].get("kv_fraction_full_layers") for t in sorted(texts)]
            mean, lo, hi = stats.mean_ci(kls)
            lo = max(lo, 0.0) if lo == lo else lo  # KL ≥ 0: the t interval's lower end is clipped
            s["kl"].append({"method": m, "length": L, "n": len(kls), "kl": mean, "lo": lo, "hi": hi,
                            "max": max(kls), "kv": sum(kv) / len(kv), "per_text": kls,
                            "kv_full_layers": (sum(kv_full) / len(kv_full)
                                               if all(x is not None for x in kv_full) else None),
                            "attn_err": sum(texts[t]["attn_err"] for t in texts) / len(texts)})
    for a, b in CLAIM_PAIRS:
        d = []
        for L in lengths:
            ta, tb = kc.get((L, a), {}), kc.get((L, b), {})
            d += [tb[t]["kl_mean"] - ta[t]["kl_mean"] for t in sorted(set(ta) & set(tb))]
        if d:
            w = stats.wilcoxon_exact(d)
            s["kl_tests"].append({"a": a, "b": b, "n": len(d), "a_lower": sum(x > 0 for x in d),
                                  "mean_diff": sum(d) / len(d), **w})
    for e in s["kl"]:
        if e["method"] == "dbudgetkv default":
            # On a model with sliding layers the methods leave those layers whole (kvd's windows
            # free them), so the drop that counts is the full-attention layers' (docs/QUALITY.md).
            drop_all = 1 - e["kv"]
            drop = drop_all if e["kv_full_layers"] is None else 1 - e["kv_full_layers"]
            s["dbudget"].append({**e, "drop": drop, "drop_all": drop_all,
                                 "meets": e["kl"] <= KL_LIMIT and drop >= DROP_MIN,
                                 "meets_ci": (e["hi"] == e["hi"] and e["hi"] <= KL_LIMIT)
                                 and drop >= DROP_MIN})
        if e["method"] == "kvsharer shipped":
            s["sharer"].append({**e, "meets": e["kl"] <= SHARER_BUDGET,
                                "meets_ci": e["hi"] == e["hi"] and e["hi"] <= SHARER_BUDGET})
    all_sh = [x for e in s["kl"] if e["method"] == "kvsharer shipped" for x in e["per_text"]]
    if all_sh:
        mean, lo, hi = stats.mean_ci(all_sh)
        lo = max(lo, 0.0)
        s["sharer_pooled"] = {"n": len(all_sh), "kl": mean, "lo": lo, "hi": hi}
    seeds = sorted({int(n.split("|")[1]) for _, n in kc if "|" in n})
    for L in lengths:
        entry = {"length": L, "seeds": len(seeds)}
        pairs = {"kl_mean": [], "attn_err": []}
        for v in ("balancekv", "balancekv uniform"):
            per_seed = {"kl_mean": [], "attn_err": []}
            kv = []
            for sd in seeds:
                texts = kc.get((L, f"{v}|{sd}"), {})
                if texts:
                    for f in per_seed:
                        per_seed[f].append(sum(t[f] for t in texts.values()) / len(texts))
                    kv += [t["kv_fraction"] for t in texts.values()]
            for f in per_seed:
                entry[f"{v}|{f}"] = stats.mean_sd(per_seed[f])
            entry[f"{v}|kv"] = sum(kv) / len(kv) if kv else float("nan")
        for sd in seeds:
            tb, tu = kc.get((L, f"balancekv|{sd}"), {}), kc.get((L, f"balancekv uniform|{sd}"), {})
            for t in sorted(set(tb) & set(tu)):
                for f in pairs:
                    pairs[f].append(tu[t][f] - tb[t][f])
        for f, d in pairs.items():
            if d:
                w = stats.wilcoxon_exact(d) if len([x for x in d if x]) <= 20 else {"p": float("nan")}
                entry[f"test|{f}"] = {"n": len(d), "balanced_lower": sum(x > 0 for x in d), "p": w["p"]}
        if entry.get("test|kl_mean"):
            s["balance"].append(entry)
    return s


def _direction(lead: float, p: float) -> str:
    """Whether the claim "A ≥ B" holds: the sign of A's lead and whether it is significant."""
    if lead == 0:
        return "tie"
    word = "holds" if lead > 0 else "reversed"
    return f"{word} (significant)" if p < ALPHA else f"{word} (n.s.)"


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def markdown(model: str, s: dict, meta: dict, budget) -> str:
    out = []
    kinds, lengths = s["kinds"], s["lengths"]
    out.append(f"#### Needles with 95 % Wilson intervals ({model}, B = {budget})\n")
    out.append("Cell = hits / prompts, accuracy [95 % Wilson interval]. Each prompt has its own "
               "haystack offset, depth (0.05–0.95) and answer.\n")
    hdr = "| method | " + " | ".join(f"{k} {L}" for k in kinds for L in lengths) + " |"
    out += [hdr, "|---" * (1 + len(kinds) * len(lengths)) + "|"]
    by = {(e["kind"], e["method"], e["length"]): e for e in s["needles"]}
    for m in NEEDLE_ORDER:
        cells = []
        for k in kinds:
            for L in lengths:
                e = by.get((k, m, L))
                cells.append("—" if e is None else
                             f"{e['k']}/{e['n']} {_pct(e['acc'])} [{_pct(e['lo'])}, {_pct(e['hi'])}]")
        label = m if m == "full" else f"{m} B={budget}"
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("\n**Paired needle comparisons** (exact McNemar on the prompts both answered; "
               "\"A only\"/\"B only\" = discordant prompts; significant = p < 0.05):\n")
    out += ["| A vs B | kind | length | A only | B only | p | significant | A ≥ B |",
            "|---|---|---|---|---|---|---|---|"]
    for t in s["needle_tests"]:
        if t["length"] == "all" or (t["a"], t["b"]) in CLAIM_PAIRS[:2]:
            out.append(f"| {t['a']} vs {t['b']} | {t['kind']} | {t['length']} | {t['a_only']} | "
                       f"{t['b_only']} | {_fmt_p(t['p'])} | {_sig(t['p'])} | "
                       f"{_direction(t['a_only'] - t['b_only'], t['p'])} |")
    out.append(f"\n#### KL over held-out texts ({model})\n")
    out.append("Mean KL(full ‖ compressed) over the 32 continuation tokens, then mean over the "
               "texts of a length [95 % t interval, lower end clipped at 0], nats; kept = KV fraction "
               "held; n = texts.\n")
    out += ["| method | " + " | ".join(f"{L}: kept | {L}: KL [95 % CI]" for L in lengths) + " |",
            "|---" * (1 + 2 * len(lengths)) + "|"]
    kb = {(e["method"], e["length"]): e for e in s["kl"]}
    for m in KL_ORDER:
        cells = []
        for L in lengths:
            e = kb.get((m, L))
            cells += (["—", "—"] if e is None else
                      [_pct(e["kv"]), f"{e['kl']:.4f} [{e['lo']:.4f}, {e['hi']:.4f}] (n={e['n']})"])
        label = f"{m} B={budget}" if m in ("headkv", "snapkv", "streamingllm") else m
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if s["kl_tests"]:
        out.append("\n**Paired KL comparisons** (exact Wilcoxon signed-rank over every (text, length) "
                   "pair; \"A lower\" = pairs where A's KL is below B's; \"A ≥ B\" follows the signed-rank sums, "
                   "which, unlike the mean, one large pair cannot dominate):\n")
        out += ["| A vs B | pairs | A lower | mean KL(B) − KL(A) | p | significant | A ≥ B |",
                "|---|---|---|---|---|---|---|"]
        for t in s["kl_tests"]:
            out.append(f"| {t['a']} vs {t['b']} | {t['n']} | {t['a_lower']} | {t['mean_diff']:+.4f} | "
                       f"{_fmt_p(t['p'])} | {_sig(t['p'])} | "
                       f"{_direction(t['w_plus'] - t['w_minus'], t['p'])} |")
    if s["dbudget"]:
        out.append(f"\n#### DBudgetKV default vs near-lossless ({model})\n")
        d = meta.get("dbudgetkv_defaults") or {}
        shown = ", ".join(f"{k} {d[k]}" for k in DBUDGET_PARAMS if k in d) or "see Plugins/dbudgetkv"
        windowed = any(e["kv_full_layers"] is not None for e in s["dbudget"])
        out.append(f"Bundled default (`{shown}`). Criterion: mean KL ≤ 0.02 nats while dropping "
                   "≥ 25 % of the KV. \"meets\" = the mean does; \"meets at 95 %\" = the interval's "
                   "upper end does.\n")
        if windowed:
            out.append("Sliding-window layers are left whole by every method (kvd's windows free "
                       "their old pages), so the criterion's drop is the share of the full-attention "
                       "layers' KV dropped; the share of all KV kvd holds is given beside it.\n")
            out += ["| length | KV dropped (full-attention layers) | KV dropped (all held) | mean KL [95 % CI] "
                    "| max over texts | meets | meets at 95 % |", "|---|---|---|---|---|---|---|"]
        else:
            out += ["| length | KV dropped | mean KL [95 % CI] | max over texts | meets | meets at 95 % |",
                    "|---|---|---|---|---|---|"]
        for e in s["dbudget"]:
            drops = f"{_pct(e['drop'])} | {_pct(e['drop_all'])}" if windowed else _pct(e["drop"])
            out.append(f"| {e['length']} | {drops} | {e['kl']:.4f} [{e['lo']:.4f}, {e['hi']:.4f}] | "
                       f"{e['max']:.4f} | {'yes' if e['meets'] else 'no'} | {'yes' if e['meets_ci'] else 'no'} |")
    if s["sharer"]:
        out.append(f"\n#### KVSharer's least costly calibrated alias vs its 0.05-nat budget ({model})\n")
        out.append(f"Map `{meta.get('alias_map', '?')}` (policy `{SHARED_POLICY.get(model, '?')}`), "
                   "KVSharer alone. No alias met the budget in calibration, so the calibrated "
                   "`*calibrated_shared` policies share no layer; this is the over-budget alias "
                   "they would have used.\n")
        out += ["| length | KV kept | mean KL [95 % CI] | max over texts | ≤ 0.05 | ≤ 0.05 at 95 % |",
                "|---|---|---|---|---|---|"]
        for e in s["sharer"]:
            out.append(f"| {e['length']} | {_pct(e['kv'])} | {e['kl']:.4f} [{e['lo']:.4f}, {e['hi']:.4f}] | "
                       f"{e['max']:.4f} | {'yes' if e['meets'] else 'no'} | {'yes' if e['meets_ci'] else 'no'} |")
        p = s.get("sharer_pooled")
        if p:
            out.append(f"| all ({p['n']} texts) | | {p['kl']:.4f} [{p['lo']:.4f}, {p['hi']:.4f}] | | "
                       f"{'yes' if p['kl'] <= SHARER_BUDGET else 'no'} | "
                       f"{'yes' if p['hi'] <= SHARER_BUDGET else 'no'} |")
    if s["balance"]:
        out.append(f"\n#### BalanceKV vs uniform over seeds ({model}, size nearest B + 32)\n")
        out.append("mean ± sd over seeds of the per-seed mean over texts; p: exact Wilcoxon over the "
                   "(text, seed) pairs; \"balanced lower\" = pairs where BalanceKV's value is below uniform's.\n")
        out += ["| length | seeds | kept | KL balanced | KL uniform | balanced lower | p (KL) | "
                "attn err balanced | attn err uniform | balanced lower | p (err) |",
                "|---" * 11 + "|"]
        for e in s["balance"]:
            kb_, ku = e["balancekv|kl_mean"], e["balancekv uniform|kl_mean"]
            eb, eu = e["balancekv|attn_err"], e["balancekv uniform|attn_err"]
            tk, te = e["test|kl_mean"], e["test|attn_err"]
            out.append(f"| {e['length']} | {e['seeds']} | {_pct(e['balancekv|kv'])} | {kb_[0]:.4f} ± {kb_[1]:.4f} | "
                       f"{ku[0]:.4f} ± {ku[1]:.4f} | {tk['balanced_lower']}/{tk['n']} | {_fmt_p(tk['p'])} | "
                       f"{eb[0]:.4f} ± {eb[1]:.4f} | {eu[0]:.4f} ± {eu[1]:.4f} | "
                       f"{te['balanced_lower']}/{te['n']} | {_fmt_p(te['p'])} |")
    return "\n".join(out) + "\n"


def plots(model: str, s: dict, folder: Path, budget) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    kinds = s["kinds"]
    if kinds:
        fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.6), squeeze=False)
        for ax, k in zip(axes[0], kinds):
            for j, m in enumerate(NEEDLE_ORDER):
                es = sorted((e for e in s["needles"] if e["kind"] == k and e["method"] == m),
                            key=lambda e: e["length"])
                if not es:
                    continue
                xs = [e["length"] * (1 + 0.04 * (j - 1.5)) for e in es]  # dodge the bars
                ys = [e["acc"] for e in es]
                # max(0, ·): at k = n the Wilson bound can round a hair below the estimate
                err = [[max(0.0, e["acc"] - e["lo"]) for e in es], [max(0.0, e["hi"] - e["acc"]) for e in es]]
                ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3,
                            label=m if m == "full" else f"{m} B={budget}")
            ax.set_xscale("log", base=2)
            ax.set_xticks(s["lengths"], [str(L) for L in s["lengths"]])
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("prompt tokens")
            ax.set_ylabel("needle accuracy (95 % Wilson)")
            ax.set_title(f"{model}: {k}")
            ax.legend(fontsize=7)
        written.append(_save(fig, folder / f"{model}-needles.png"))
    if s["kl"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in KL_ORDER[1:]:
            es = [e for e in s["kl"] if e["method"] == m and e["kl"] > 0]
            if not es:
                continue
            lo = [max(e["kl"] - e["lo"], 0) if e["lo"] == e["lo"] else 0 for e in es]
            lo = [min(l, e["kl"] * 0.999) for l, e in zip(lo, es)]  # log axis: stay above 0
            hi = [max(0.0, e["hi"] - e["kl"]) if e["hi"] == e["hi"] else 0 for e in es]
            ax.errorbar([e["kv"] for e in es], [e["kl"] for e in es], yerr=[lo, hi], marker="o",
                        ms=4, capsize=3, linestyle="none", label=m)
        ax.axhline(KL_LIMIT, color="grey", lw=0.8, ls="--")
        ax.axhline(SHARER_BUDGET, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 3)  # intervals clipped at KL 0 run off the bottom
        ax.set_xlabel("KV fraction kept (points: 512–4096 tokens)")
        ax.set_ylabel("mean KL, nats (95 % t interval)")
        ax.set_title(f"{model}: KL vs KV kept (dashed 0.02, dotted 0.05)")
        ax.legend(fontsize=7)
        written.append(_save(fig, folder / f"{model}-kl.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def insert_docs(docs: Path, section: str) -> None:
    """Put ``section`` between the stats markers (created after the title when absent)."""
    text = docs.read_text() if docs.exists() else "# Compaction quality on a real model\n"
    a, b = text.find(BEGIN), text.find(END)
    note = f"{NOTE_BEGIN}\n{NOTE_END}"
    if a >= 0 and b > a:
        na, nb = text.find(NOTE_BEGIN, a, b), text.find(NOTE_END, a, b)
        if na >= 0 and nb > na:
            note = text[na:nb + len(NOTE_END)]
    block = f"{BEGIN}\n{section.rstrip()}\n\n{note}\n{END}"
    if a >= 0 and b > a:
        text = text[:a] + block + text[b + len(END):]
    else:
        nl = text.find("\n") + 1
        text = text[:nl] + "\n" + block + "\n" + text[nl:]
    docs.write_text(text)


INTRO = """## Statistics grid (issue 16)

Regenerate (resumable; each (prompt, method) is one line of `results/stats/grid-<model>*.jsonl`;
`--only kl|needles` and `--part=-X` split it over processes; `--report-only` rebuilds this section
and the plots from the checkpoints):

```sh
~/.cache/kvd/venv/bin/python -m kvd_transformers.report.grid --start-daemon --model smollm2-135m --out results/stats --resume
```

**Prompts.** Needles of two kinds per (kind, length), each prompt with its own haystack offset,
depth (evenly spread over 0.05–0.95, shuffled) and answer, deterministic in `--seed`:
`numbers` = the license corpus (`/usr/share/common-licenses`) with "the secret vault code is
NNNN" (correct: the code appears as a whole digit run in the greedy answer, ≤ 16 tokens);
`places` = the docstrings of the `torch.nn` classes (present wherever the report runs; not the
licenses, not the calibration corpora `pydoc_data.topics` / standard-library docstrings) with
"The <item> is hidden <under|inside|behind> the <object> in <city>." and a one-word question for
the city (even prompts) or the object (odd prompts) (correct: that word appears, whole word,
case-insensitive). Entity words start with A–L and none appears in the calibration helper's
needles (tested). SmolLM2-Instruct gets its chat template; a tokenizer without one gets plain
text ending in "Question: …\nAnswer:". KL: 4 license spans per length (token offsets 1200,
12200, 16400, 23600; L + 32 tokens each, disjoint, and clear of the DBudgetKV study's texts on
which its default was chosen), KL over the 32 continuation tokens.

**Methods.** full; StreamingLLM, SnapKV, HeadKV at one budget B (tokens per head outside the
32-query window; StreamingLLM sinks 4 + recent B + 28); DBudgetKV with the plugin's bundled
defaults; KVSharer alone with the model's least costly calibrated alias (policies
`smollm2-share-one-layer`, `gemma3-share-one-layer`: over budget, see below); BalanceKV
and its uniform baseline at the `itrs` nearest B + 32 over 5 seeds (KL texts only). DBudgetKV
and KVSharer run on the KL texts only: their claims are KL claims.

**Statistics** (`kvd_transformers.report.stats`, checked against `scipy.stats` in
`Tests/e2e/test_report_stats.py`): needle accuracy with the 95 % Wilson score interval; two
methods on the same needle prompts: exact McNemar (two-sided binomial on the discordant prompts);
KL: mean over texts with the 95 % t interval; two methods' KL on the same texts: exact Wilcoxon
signed-rank over the paired (text, length) values. Wilcoxon rather than the sign test because it
weighs how large the differences are, and rather than a bootstrap because with 4–20 pairs an exact
test has the stated level while a bootstrap interval on 4 points does not. With 4 texts per length
no two-sided test on one length can reach p < 0.05 (the smallest exact p is 2/2⁴ = 0.125), so
the KL comparisons pool the 16 (text, length) pairs. Significant = p < 0.05, per comparison (no
multiple-testing correction; there are few and they are named).
"""


def write_all(out: Path, docs: Path | None, plot_dir: Path) -> str:
    sections = [INTRO]
    for model in models_in(out):
        rows = load(out, model)
        metap = Path(out) / f"grid-{model}.meta.json"
        meta = json.loads(metap.read_text()) if metap.is_file() else {}
        budget = meta.get("budget", "?")
        s = summarize(rows)
        (Path(out) / f"stats-{model}.json").write_text(json.dumps(s, indent=1, default=str))
        md = markdown(model, s, meta, budget)
        for p in plots(model, s, plot_dir, budget):
            rel = p.name
            md += f"\n![{p.stem}](quality/{rel})\n"
        (Path(out) / f"stats-{model}.md").write_text(md)
        sections.append(f"### {model}\n\n{md}")
    text = "\n".join(sections)
    if docs is not None and len(sections) > 1:
        insert_docs(docs, text)
    return text
