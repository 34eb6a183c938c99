"""BalanceKV against its uniform baseline over seeds: next-token KL and attention-output error.

``python -m kvd_transformers.report.balancekv_study --start-daemon --out results/`` (minutes on 2
cores; ``--resume`` keeps finished cells of ``results/balancekv_study.jsonl``; ``--report-only``
rebuilds ``results/balancekv_study.md`` from it). It reuses the quality report's machinery: the
cached f32 SmolLM2, one prefill per prompt replayed into a fresh kvd sequence per cell
(:mod:`.prefill`), the teacher-forced KL over the 32 continuation tokens and the attention-output
error (:mod:`.metrics`), the report's temporary daemon.

Texts: ``TEXTS`` (license corpus token offsets): the four held-out spans of :mod:`.dbudget` and
four more, none a report or calibration prompt. A cell is (variant, length, text, halving rounds,
seed); BalanceKV runs with sinks 32 and recent 32 (the plugin's defaults), so balanced and uniform
keep exactly the same number of tokens per head (``64 + (n − 64) >> rounds``). The default run is
``MAIN`` (balanced, uniform); ``--walk-stats`` also records, per text, the share of the walk's
forced steps (:func:`walk_stats`).

Variants: ``VARIANTS`` below. Some change only what the *client* does with the kept tokens'
log-weights and values (:func:`transform`): ``"kvd"`` uses kvd's log-weights as the attention bias
(what a runtime must do), ``"zero"`` drops them (plain eviction of the same tokens), ``"count"``
gives every kept middle token ``rounds·log 2`` (the released code's decode bias), ``"released"``
is the released code's decode for its weighted walk (values × w/2^rounds, bias ``rounds·log 2``).
The attention-output error of a cell is computed with the same keys, values and bias as its KL.

Outputs: per (variant, rounds) the mean ± sd over seeds of the per-seed mean over texts, and a
paired comparison against ``uniform`` over every (text, seed): mean difference, how many pairs are
lower, an exact two-sided sign test and a paired t-test; the same per text (the mean over seeds),
since the balanced walk hardly depends on the seed; the KL's sd over seeds within a text.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from kvd_transformers.report.daemon import add_daemon_args

import numpy as np

from kvd_transformers.report.checkpoint import read_rows as load_cells

REPO = Path(__file__).resolve().parents[4]
MODEL_NAME = "smollm2-135m-f32"
WINDOW = 32
LENGTHS = [512]
# The dbudget study's four held-out spans, then four more clear of the report's KL prompts (the
# first 4128 tokens) and needle text (from 20000): 512 + 32 tokens each.
TEXTS = [8000, 28000, 36000, 44000, 12000, 16000, 32000, 40000]
ROUNDS = [1, 2, 3]
SEEDS = [0, 1, 2, 3, 4]
SINKS = RECENT = 32

# label -> (Compact params besides sinks/recent/itrs/seed, what the client does with log-weights)
VARIANTS = {
    "balanced": ({"variant": "balanced"}, "kvd"),
    "uniform": ({"variant": "uniform"}, "kvd"),
    "balanced / no log-weights": ({"variant": "balanced"}, "zero"),
    "uniform / no log-weights": ({"variant": "uniform"}, "zero"),
    "balanced / count weights": ({"variant": "balanced"}, "count"),
    "uniform / count weights": ({"variant": "uniform"}, "count"),
    "balanced / released-code weights": ({"variant": "balanced"}, "released"),
    "balanced γ=1e-4": ({"variant": "balanced", "gamma": 1e-4}, "kvd"),
    "balanced τ=0.5": ({"variant": "balanced", "tau": 0.5}, "kvd"),
}
MAIN = ["balanced", "uniform"]
# Walk settings whose share of deterministic steps walk_stats reports (γ, τ).
WALK_SETTINGS = [(4.0, 1.0), (1e-2, 1.0), (1e-4, 1.0), (4.0, 0.5)]
BASELINE = "uniform"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.report.balancekv_study",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_daemon_args(p)
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--name", default="balancekv_study", help="output file stem (default balancekv_study)")
    p.add_argument("--resume", action="store_true", help="keep finished cells of the .jsonl")
    p.add_argument("--report-only", action="store_true", help="only rebuild the .md")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    p.add_argument("--texts", type=int, default=len(TEXTS), help=f"how many of the {len(TEXTS)} texts")
    p.add_argument("--rounds", default=",".join(map(str, ROUNDS)))
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--variants", default=",".join(MAIN), help="comma list of variant labels (default: balanced,uniform)")
    p.add_argument("--walk-stats", action="store_true", help="also measure the walk's forced steps per text")
    a = p.parse_args(argv)
    if not a.report_only and not a.endpoint and not a.start_daemon:
        p.error("give --endpoint or --start-daemon")
    return a


def cell_key(label: str, length: int, text: int, rounds: int, seed: int) -> str:
    return f"{label}|{length}|{text}|{rounds}|{seed}"


# ---------------------------------------------------------------------------------------------
# Statistics (pure functions, tested in Tests/e2e/test_balancekv_study.py)

def sign_test(diffs) -> tuple:
    """(pairs below 0, pairs above 0, exact two-sided binomial p over the non-zero pairs)."""
    d = np.asarray(diffs, np.float64)
    lo, hi = int((d < 0).sum()), int((d > 0).sum())
    n = lo + hi
    if n == 0:
        return lo, hi, 1.0
    k = min(lo, hi)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return lo, hi, min(1.0, 2 * tail)


def paired_t(diffs) -> tuple:
    """(t, two-sided p) of the paired t-test (mean difference / its standard error, n − 1 df)."""
    d = np.asarray(diffs, np.float64)
    n = d.size
    if n < 2:
        return float("nan"), float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return (0.0, 1.0) if d.mean() == 0 else (math.copysign(math.inf, d.mean()), 0.0)
    t = d.mean() / (sd / math.sqrt(n))
    try:
        from scipy.stats import t as student
        p = float(2 * student.sf(abs(t), n - 1))
    except ImportError:  # normal approximation
        p = math.erfc(abs(t) / math.sqrt(2))
    return float(t), p


def over_seeds(rows: list, field: str) -> tuple:
    """Mean ± sd over seeds of the per-seed mean over texts."""
    per_seed = {}
    for r in rows:
        per_seed.setdefault(r["seed"], []).append(r[field])
    vals = np.array([np.mean(v) for v in per_seed.values()])
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0, int(vals.size)


FIELDS = [("kl_mean", "KL"), ("attn_err", "attention error"), ("attn_err_heldout", "held-out attention error")]


def summarize(cells: dict) -> dict:
    groups = {}
    for r in cells.values():
        groups.setdefault((r["variant"], r["length"], r["rounds"]), []).append(r)
    table, paired = [], []
    order = {label: i for i, label in enumerate(VARIANTS)}
    for (label, length, rounds), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], order.get(kv[0][0], 99))):
        entry = {"variant": label, "length": length, "rounds": rounds, "cells": len(rows),
                 "texts": len({r["text"] for r in rows}), "kv_fraction": float(np.mean([r["kv_fraction"] for r in rows]))}
        for f, _ in FIELDS:
            entry[f], entry[f + "_sd"], entry["seeds"] = over_seeds(rows, f)
        table.append(entry)
        base = {(r["text"], r["seed"]): r for r in groups.get((BASELINE, length, rounds), [])}
        if label == BASELINE or not base:
            continue
        pairs = [(r, base[(r["text"], r["seed"])]) for r in rows if (r["text"], r["seed"]) in base]
        pe = {"variant": label, "length": length, "rounds": rounds, "pairs": len(pairs)}
        for f, _ in FIELDS:
            d = [a[f] - b[f] for a, b in pairs]
            lo, hi, p_sign = sign_test(d)
            t, p_t = paired_t(d)
            rel = [a[f] / b[f] - 1 for a, b in pairs if b[f] > 0]
            pe[f] = {"mean_diff": float(np.mean(d)), "sd_diff": float(np.std(d, ddof=1)) if len(d) > 1 else 0.0,
                     "mean_rel": float(np.mean(rel)) if rel else float("nan"),
                     "lower": lo, "higher": hi, "p_sign": p_sign, "t": t, "p_t": p_t}
        # Texts as the unit: the balanced walk hardly depends on the seed (see walk_stats).
        per_text = {}
        for a, b in pairs:
            per_text.setdefault(a["text"], []).append((a["kl_mean"], b["kl_mean"]))
        dt = [np.mean([x for x, _ in v]) - np.mean([y for _, y in v]) for v in per_text.values()]
        lo, hi, p_sign = sign_test(dt)
        t, p_t = paired_t(dt)
        pe["kl_by_text"] = {"texts": len(dt), "mean_diff": float(np.mean(dt)) if dt else float("nan"),
                            "sd_diff": float(np.std(dt, ddof=1)) if len(dt) > 1 else 0.0,
                            "lower": lo, "higher": hi, "p_sign": p_sign, "t": t, "p_t": p_t}
        paired.append(pe)
    return {"table": table, "paired": paired, "seed_sd": seed_sd(cells)}


def seed_sd(cells: dict) -> list:
    """Per (variant, length, rounds): the KL's sd over seeds within a text, mean over texts."""
    groups = {}
    for r in cells.values():
        groups.setdefault((r["variant"], r["length"], r["rounds"]), {}).setdefault(r["text"], []).append(r["kl_mean"])
    out = []
    for (label, length, rounds), texts in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        sds = [np.std(v, ddof=1) for v in texts.values() if len(v) > 1]
        if sds:
            out.append({"variant": label, "length": length, "rounds": rounds, "kl_sd_within_text": float(np.mean(sds))})
    return out


def markdown(summary: dict) -> str:
    lines = ["| variant | prompt | rounds | KV fraction | KL (nats) | attention error | held-out attention error |",
             "|---|---|---|---|---|---|---|"]
    for e in summary["table"]:
        lines.append(f"| {e['variant']} | {e['length']} | {e['rounds']} | {e['kv_fraction']:.3f} | "
                     + " | ".join(f"{e[f]:.4f} ± {e[f + '_sd']:.4f}" for f, _ in FIELDS) + " |")
    seeds = max((e["seeds"] for e in summary["table"]), default=0)
    texts = max((e["texts"] for e in summary["table"]), default=0)
    lines += ["", f"Mean ± sd over {seeds} seeds of the per-seed mean over {texts} texts. KL = KL(full ‖ "
              "compressed) of the next-token distributions over the 32 continuation tokens, nats; attention "
              "error = ‖o − ô‖/‖o‖ of the last prompt token, mean over 30 layers × 9 query heads; held-out: the "
              "same for the 32 continuation queries. The attention error uses the same bias as the KL (kvd's "
              "log-weights, or none).", "",
              f"Paired against `{BASELINE}` (same text, seed, rounds and kept size): variant − {BASELINE}.", "",
              "| variant | prompt | rounds | pairs | ΔKL mean ± sd | KL lower | sign p | t-test p | "
              "texts: ΔKL mean ± sd | texts: KL lower | texts: sign p | texts: t-test p | Δ attention error (rel.) | lower | sign p |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in summary["paired"]:
        k, a, bt = p["kl_mean"], p["attn_err"], p["kl_by_text"]
        lines.append(f"| {p['variant']} | {p['length']} | {p['rounds']} | {p['pairs']} | "
                     f"{k['mean_diff']:+.4f} ± {k['sd_diff']:.4f} | {k['lower']}/{p['pairs']} | {k['p_sign']:.3g} | "
                     f"{k['p_t']:.3g} | {bt['mean_diff']:+.4f} ± {bt['sd_diff']:.4f} | {bt['lower']}/{bt['texts']} | {bt['p_sign']:.3g} | {bt['p_t']:.3g} | "
                     f"{100 * a['mean_rel']:+.1f} % | {a['lower']}/{p['pairs']} | {a['p_sign']:.3g} |")
    lines += ["", "pairs = (text, seed); \"texts\" = the per-text mean over seeds compared (texts as the unit). "
              "Sign p: exact two-sided binomial over the non-tied pairs; t-test p: paired, two-sided.", "",
              "KL sd over seeds within a text (mean over texts):", "",
              "| variant | prompt | rounds | KL sd within a text |", "|---|---|---|---|"]
    for e in summary.get("seed_sd", []):
        lines.append(f"| {e['variant']} | {e['length']} | {e['rounds']} | {e['kl_sd_within_text']:.4f} |")
    ws = summary.get("walk_stats")
    if ws:
        lines += ["", "BalanceKV walk on the prompts' own K/V (round 1, every head, sinks/recent 32, block 128): "
                  "share of steps whose p = ½ − γΣK s lies outside (0, 1), so the sign is forced; largest kernel exponent.", "",
                  "| γ | τ | deterministic steps | largest exponent τ⟨x,x'⟩/√d |", "|---|---|---|---|"]
        for w in ws:
            lines.append(f"| {w['gamma']:g} | {w['tau']:g} | {100 * w['deterministic']:.1f} % | {w['max_exponent']:.1f} |")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, name: str, cells: dict) -> str:
    summary = summarize(cells)
    ws_path = out / f"{name}_walk.jsonl"
    if ws_path.exists():
        rows = [json.loads(x) for x in ws_path.read_text().splitlines() if x.strip()]
        agg = {}
        for r in rows:
            agg.setdefault((r["gamma"], r["tau"]), []).append(r)
        summary["walk_stats"] = [
            {"gamma": g, "tau": t, "texts": len(rs), "max_exponent": max(r["max_exponent"] for r in rs),
             "deterministic": sum(r["deterministic"] * r["steps"] for r in rs) / sum(r["steps"] for r in rs)}
            for (g, t), rs in sorted(agg.items(), key=lambda kv: (-kv[0][1], -kv[0][0]))]
    md = markdown(summary)
    (out / f"{name}.md").write_text("# BalanceKV vs uniform over seeds (SmolLM2-135M)\n\n" + md)
    (out / f"{name}_summary.json").write_text(json.dumps(summary, indent=1))
    return md


# ---------------------------------------------------------------------------------------------
# The walk's regime

def walk_stats(keys, values, *, gamma: float, tau: float, block: int = 128, sinks: int = SINKS,
               recent: int = RECENT, seed: int = 0) -> dict:
    """Round 1 of the balanced walk (kvd's kernel and step, see docs/ALGORITHMS.md) on every head of
    ``keys``/``values`` ``[L, H, n, D]``, float64 with its own draws: how many steps have
    p = ½ − γ Σ_{j<i} K_ij s_j outside (0, 1) (the sign is then forced), and the largest exponent
    τ⟨x_i, x_j⟩/√d (j < i) of the key kernel (kvd's exp clamps at 88)."""
    rng = np.random.default_rng(seed)
    L, H, n, d = keys.shape
    steps = forced = 0
    top = -math.inf
    for l in range(L):
        for h in range(H):
            k = np.asarray(keys[l, h, sinks:n - recent], np.float64)
            v = np.asarray(values[l, h, sinks:n - recent], np.float64)
            m = k.shape[0]
            padded = -(-m // block) * block
            kp = np.zeros((padded, d))
            vp = np.zeros((padded, d))
            kp[:m], vp[:m] = k, v
            for s0 in range(0, padded, block):
                x = kp[s0:s0 + block] - kp[s0:s0 + block].mean(axis=0)
                y = vp[s0:s0 + block]
                expo = tau * (x @ x.T) / math.sqrt(d)
                top = max(top, float(expo[np.tril_indices(block, -1)].max()))
                with np.errstate(over="ignore", invalid="ignore"):
                    kern = np.exp(expo) * (1e-8 + y @ y.T + 0.025)
                signs = np.zeros(block)
                signs[0] = 1
                u = rng.random(block)
                for i in range(1, block):
                    p = 0.5 - gamma * float(kern[i, :i] @ signs[:i])
                    steps += 1
                    forced += not (0 < p < 1)
                    signs[i] = 1 if u[i] < p else -1
    return {"deterministic": forced / steps, "steps": steps, "max_exponent": top}


# ---------------------------------------------------------------------------------------------
# Measurement

def transform(k, v, lw, rounds: int, mode: str):
    """One kept head's (keys, values, bias) as the attention should see them under ``mode``
    (``k``/``v`` ``[P, D]``, ``lw`` ``[P]`` kvd's log-weights; the first SINKS and last RECENT
    entries are the sinks and the recent window, the rest the kept middle):

    * ``kvd``: bias = kvd's log-weights (log of the walk's weight w, normally 2^rounds);
    * ``zero``: no bias (plain eviction of the same tokens);
    * ``count``: bias = rounds·log 2 on every kept middle token (each stands for 2^rounds tokens);
    * ``released``: the released code's decode: values × w / 2^rounds and bias rounds·log 2.
    """
    lw = np.asarray(lw, np.float32)
    mid = np.zeros(lw.shape, bool)
    mid[SINKS:lw.size - RECENT] = True
    if mode == "kvd":
        return k, v, lw
    if mode == "zero":
        return k, v, np.zeros_like(lw)
    count = np.where(mid, np.float32(rounds * math.log(2)), lw).astype(np.float32)
    if mode == "count":
        return k, v, count
    if mode == "released":
        scale = np.where(mid, np.exp(lw - count), 1).astype(np.float32)
        return k, np.asarray(v, np.float32) * scale[:, None], count
    raise ValueError(mode)


class _Head:
    """A kept head with its log-weights replaced (what metrics.attention_errors reads)."""

    __slots__ = ("keys", "values", "log_weights")

    def __init__(self, k, v, lw):
        self.keys, self.values, self.log_weights = k, v, lw


class _Kept:
    def __init__(self, q, lw_mode: str, rounds: int, layers: int, heads: int):
        self.heads = {}
        for l in range(layers):
            for h in range(heads):
                hd = q[l, h]
                self.heads[l, h] = _Head(*transform(hd.keys, hd.values, hd.log_weights, rounds, lw_mode))

    def __getitem__(self, lh):
        return self.heads[lh]


def apply_lw_mode(cache, kept: "_Kept", lw_mode: str) -> None:
    """Make ``cache`` hand the attention function ``kept``'s keys, values and bias (every head of
    a BalanceKV cache keeps the same count, so there is no padding)."""
    if lw_mode == "kvd":
        return
    import torch

    prefix = cache._prefix

    def prefix_of(layer_idx, dtype, device):
        k, v, bias, owner = prefix(layer_idx, dtype, device)
        heads = [kept[layer_idx, h] for h in range(cache.kv_heads)]
        v = torch.from_numpy(np.stack([np.asarray(hd.values, np.float32) for hd in heads]))[None].to(dtype=dtype, device=device)
        bias = torch.from_numpy(np.stack([hd.log_weights for hd in heads])).to(device)
        return k, v, bias, owner

    cache._prefix = prefix_of


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.jsonl"
    if not (args.resume or args.report_only) and path.exists():
        path.unlink()
    cells = load_cells(path)
    if args.report_only:
        print(write_outputs(out, args.name, cells))
        return 0

    import torch

    torch.set_num_threads(1)
    from kvd_transformers.report import metrics, prompts
    from kvd_transformers.report.cell import _kept_fraction
    from kvd_transformers.report.daemon import stage_logger, study_client
    from kvd_transformers.report.model import load as load_model
    from kvd_transformers.report.prefill import restore, run_prefill

    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    rounds_list = [int(x) for x in args.rounds.split(",") if x.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    texts = TEXTS[:args.texts]
    want = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(want) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    variants = [v for v in VARIANTS if v in want]
    log = stage_logger("balancekv-study")
    with study_client(args, REPO, max(lengths) + 64, log) as client:
        model, tok = load_model()
        ids = prompts.corpus_ids(tok)
        for L in lengths:
            for t in texts:
                todo = [(v, r, s) for r in rounds_list for s in seeds for v in variants
                        if cell_key(v, L, t, r, s) not in cells]
                if not todo:
                    continue
                span = ids[t:t + L + prompts.CONTINUATION]
                prompt, cont = torch.tensor([span[:L]]), torch.tensor([span[L:]])
                pre = run_prefill(model, client, MODEL_NAME, prompt, WINDOW)
                cache, _ = restore(model, client, MODEL_NAME, pre, WINDOW)
                try:
                    ref_logp = metrics.teacher_forced_logprobs(model, cache, cont)
                finally:
                    cache.release()
                last_q = [q[:, -1:, :].numpy() for q in pre.queries]
                if args.walk_stats:
                    for gamma, tau in WALK_SETTINGS:
                        w = walk_stats(pre.keys, pre.values, gamma=gamma, tau=tau)
                        with open(out / f"{args.name}_walk.jsonl", "a") as f:
                            f.write(json.dumps({"length": L, "text": t, "gamma": gamma, "tau": tau, **w}) + "\n")
                        log(f"L={L} text@{t} walk γ={gamma:g} τ={tau:g}: {100 * w['deterministic']:.1f} % forced, "
                            f"max exponent {w['max_exponent']:.1f}")
                for label, rounds, seed in todo:
                    params, lw_mode = VARIANTS[label]
                    params = {"sinks": SINKS, "recent": RECENT, "itrs": rounds, "seed": seed, **params}
                    cache, resp = restore(model, client, MODEL_NAME, pre, WINDOW, "balancekv", "", params)
                    try:
                        frac = _kept_fraction(client, cache, L)[0]
                        q = client.query(cache.sequence_id, copy=True)
                        kept = _Kept(q, lw_mode, rounds, cache.num_layers, cache.kv_heads)
                        apply_lw_mode(cache, kept, lw_mode)
                        kl = metrics.kl_per_position(ref_logp, metrics.teacher_forced_logprobs(model, cache, cont))
                        heldout = list(cache.heldout)
                    finally:
                        cache.release()
                    err_last = metrics.attention_errors(last_q, pre.keys, pre.values, kept)
                    err_held = metrics.attention_errors(heldout, pre.keys, pre.values, kept)
                    row = {"key": cell_key(label, L, t, rounds, seed), "variant": label, "params": params,
                           "lw": lw_mode, "length": L, "text": t, "rounds": rounds, "seed": seed,
                           "kv_fraction": float(frac), "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
                           "attn_err": float(err_last.mean()), "attn_err_heldout": float(err_held.mean()),
                           "attn_err_layers": [float(x) for x in err_last.mean(axis=(1, 2))],
                           "compact_ms": resp.elapsed_ns / 1e6}
                    cells[row["key"]] = row
                    with open(path, "a") as f:
                        f.write(json.dumps(row, sort_keys=True) + "\n")
                    log(f"L={L} text@{t} r={rounds} seed={seed} {label}: kept {frac:.3f} "
                        f"KL {row['kl_mean']:.4f} err {row['attn_err']:.4f}")
                del pre
        print(write_outputs(out, args.name, cells))
        return 0


if __name__ == "__main__":
    sys.exit(main())
