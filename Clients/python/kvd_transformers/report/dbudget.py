"""DBudgetKV's stop variants on held-out text: kept KV and next-token KL per (variant, length).

``python -m kvd_transformers.report.dbudget --start-daemon --out results/`` (minutes on 2 cores;
``--resume`` keeps finished cells of ``results/dbudget.jsonl``; ``--report-only`` rebuilds
``results/dbudget.md`` from it). It reuses the quality report's machinery: the cached f32 SmolLM2,
one prefill per prompt replayed into a fresh kvd sequence per variant (:mod:`.prefill`), the
teacher-forced KL over the 32 continuation tokens (:mod:`.metrics`) and the report's temporary
daemon.

Texts: ``TEXTS`` spans of the license corpus the report reads (``/usr/share/common-licenses``,
about 52k tokens), clear of the report's own KL prompts (the first 4128 tokens) and needle text
(``NEEDLE_OFFSET`` + 4128), so no prompt here is one the report or a calibration tool
(``pydoc_data.topics``) uses. The prompt of
length L is the first L tokens of a span, the continuation the 32 after them.

The criterion (issue 16): "near-lossless" = mean KL ≤ 0.02 nats while dropping ≥ 25 % of the KV,
at every length 512–4096.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kvd_transformers.report.daemon import add_daemon_args

import numpy as np

from kvd_transformers.report.checkpoint import read_rows as load_cells

REPO = Path(__file__).resolve().parents[4]
WINDOW = 32
LENGTHS = [512, 1024, 2048, 4096]
# Span starts in corpus tokens; each span needs max(LENGTHS) + CONTINUATION tokens.
TEXTS = [8000, 28000, 36000, 44000]
KL_LIMIT, DROP_MIN = 0.02, 0.25

# The released code's ranking (last 8 queries, unpooled) and stop (last query): pinned in every
# variant, so a change of the plugin's defaults does not change what a label measures.
RELEASED = {"rank_window": 8, "stop_window": 1, "pooling": "none", "kernel": 1}


def _extension(threshold: float, rank: int = 8, stop: int = 1, pooling: str = "none", kernel: int = 1):
    """A variant with kvd's extensions (ℓ1, 4 sinks) and the ranking window ``rank``, the stop's
    query window ``stop`` (``32`` = the whole observation window, sent as 0) and the ranking's
    pooling; its label names what differs from the released code's ranking (8 queries, no pooling)
    and stop (the last query)."""
    params = {**RELEASED, "norm": "l1", "sinks": 4, "threshold": threshold,
              "rank_window": 0 if rank == WINDOW else rank, "stop_window": 0 if stop == WINDOW else stop}
    if kernel > 1:
        params.update(pooling=pooling, kernel=kernel)
    if rank == stop and stop != 1:
        what = f" rank+stop {stop}"
    else:
        what = (f" rank {rank}" if rank != 8 else "") + (f" stop {stop}" if stop != 1 else "")
    return (f"l1 + sinks 4 T={threshold:g}{what}" + (f" {pooling}{kernel}" if kernel > 1 else ""), params)


# (label, params). The paper's stop is ℓ2 with no sinks; the ranking window is the released
# code's 8 queries in every variant (rank_window 0 = kvd's earlier whole-window ranking).
VARIANTS = [
    ("l2 (paper) T=0.05", {**RELEASED, "norm": "l2", "sinks": 0, "threshold": 0.05}),
    ("l2 (paper) T=0.01", {**RELEASED, "norm": "l2", "sinks": 0, "threshold": 0.01}),
    ("l2 + sinks 4 T=0.01", {**RELEASED, "norm": "l2", "sinks": 4, "threshold": 0.01}),
    ("l2 + sinks 4 T=0.001", {**RELEASED, "norm": "l2", "sinks": 4, "threshold": 0.001}),
    ("l1 T=0.02", {**RELEASED, "norm": "l1", "sinks": 0, "threshold": 0.02}),
    ("l1 T=0.01", {**RELEASED, "norm": "l1", "sinks": 0, "threshold": 0.01}),
    ("l1 T=0.005", {**RELEASED, "norm": "l1", "sinks": 0, "threshold": 0.005}),
    ("l1 + sinks 4 T=0.02", {**RELEASED, "norm": "l1", "sinks": 4, "threshold": 0.02}),
    ("l1 + sinks 4 T=0.01", {**RELEASED, "norm": "l1", "sinks": 4, "threshold": 0.01}),
    ("l1 + sinks 4 T=0.005", {**RELEASED, "norm": "l1", "sinks": 4, "threshold": 0.005}),
    ("l1 + sinks 4 T=0.002", {**RELEASED, "norm": "l1", "sinks": 4, "threshold": 0.002}),
    # kvd's earlier ranking: every one of the 32 observation queries.
    ("l1 + sinks 4 T=0.005, rank 32", {**RELEASED, "norm": "l1", "sinks": 4, "threshold": 0.005, "rank_window": 0}),
    ("l1 + sinks 4 T=0.002, rank 32", {**RELEASED, "norm": "l1", "sinks": 4, "threshold": 0.002, "rank_window": 0}),
    *[_extension(T, stop=8) for T in (0.005, 0.01, 0.02)],
    *[_extension(T, rank=32, stop=32) for T in (0.01, 0.02)],
    _extension(0.015, rank=32, stop=1, pooling="max", kernel=7),
    _extension(0.015, rank=8, stop=8, pooling="max", kernel=7),
    _extension(0.01, rank=32, stop=32, pooling="avg", kernel=7),
    *[_extension(T, rank=32, stop=32, pooling="max", kernel=k) for k, ts in [
        (7, (0.01, 0.0125, 0.015, 0.02, 0.03)), (11, (0.015, 0.02, 0.03)),
        (21, (0.02, 0.03, 0.04, 0.05, 0.06, 0.065, 0.07, 0.08)), (31, (0.05, 0.06, 0.065, 0.07, 0.08)),
        (41, (0.07, 0.08, 0.09)), (51, (0.09,))] for T in ts],
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.report.dbudget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_daemon_args(p, model=True)
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--resume", action="store_true", help="keep finished cells of dbudget.jsonl")
    p.add_argument("--report-only", action="store_true", help="only rebuild dbudget.md")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    p.add_argument("--texts", type=int, default=len(TEXTS), help=f"how many of the {len(TEXTS)} texts")
    p.add_argument("--variants", default="", help="comma list of variant labels (default: all)")
    a = p.parse_args(argv)
    if not a.report_only and not a.endpoint and not a.start_daemon:
        p.error("give --endpoint or --start-daemon")
    return a


def cell_key(label: str, length: int, text: int) -> str:
    return f"{label}|{length}|{text}"


def summarize(cells: dict) -> list:
    """Per (variant, length): kept fraction and per-prompt mean KL, mean ± sd over the texts."""
    order = {label: i for i, (label, _) in enumerate(VARIANTS)}
    groups = {}
    for row in cells.values():
        groups.setdefault((row["variant"], row["length"]), []).append(row)
    out = []
    for (label, length), rows in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        kl = np.array([r["kl_mean"] for r in rows])
        # On a model with sliding layers the criterion counts the full-attention layers' KV (the
        # only KV a method drops; kvd's windows free the rest).
        kept = np.array([r["kv_fraction"] if r.get("kv_fraction_full_layers") is None
                         else r["kv_fraction_full_layers"] for r in rows])
        out.append({"variant": label, "length": length, "texts": len(rows), "params": rows[0]["params"],
                    "kept": float(kept.mean()), "kept_sd": float(kept.std(ddof=1)) if len(rows) > 1 else 0.0,
                    "kl": float(kl.mean()), "kl_sd": float(kl.std(ddof=1)) if len(rows) > 1 else 0.0,
                    "kl_max": float(max(r["kl_max"] for r in rows))})
    return out


def markdown(summary: list) -> str:
    lengths = sorted({s["length"] for s in summary})
    by = {(s["variant"], s["length"]): s for s in summary}
    labels = [label for label, _ in VARIANTS if any((label, L) in by for L in lengths)]
    head = "| variant | " + " | ".join(f"{L}: kept | {L}: KL" for L in lengths) + " | meets criterion |"
    lines = [head, "|---|" + "---|---|" * len(lengths) + "---|"]
    for label in labels:
        cells, ok = [], True
        for L in lengths:
            s = by.get((label, L))
            if s is None:
                cells += ["—", "—"]
                ok = False
                continue
            cells += [f"{100 * s['kept']:.1f} %", f"{s['kl']:.4f} ± {s['kl_sd']:.4f}"]
            ok = ok and s["kl"] <= KL_LIMIT and 1 - s["kept"] >= DROP_MIN
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    texts = max((s["texts"] for s in summary), default=0)
    return ("\n".join(lines) + f"\n\nkept = tokens kvd holds after compaction / tokens of the full cache "
            f"(the 32-query window included); KL = KL(full ‖ compressed) of the next-token distribution, "
            f"mean over the 32 continuation tokens of a prompt, then mean ± sd over {texts} texts, nats. "
            f"Criterion: KL ≤ {KL_LIMIT} and ≥ {DROP_MIN:.0%} dropped at every length.\n")


def stem(model: str) -> str:
    """Output file stem: ``dbudget`` for SmolLM2 (as before), ``dbudget-<model>`` otherwise."""
    return "dbudget" if model == "smollm2-135m" else f"dbudget-{model}"


def write_outputs(out: Path, cells: dict, model: str = "smollm2-135m") -> str:
    summary = summarize(cells)
    md = markdown(summary)
    (out / f"{stem(model)}.md").write_text(f"# DBudgetKV stop variants on held-out text ({model})\n\n" + md)
    (out / f"{stem(model)}_summary.json").write_text(json.dumps(summary, indent=1))
    return md


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem(args.model)}.jsonl"
    if not (args.resume or args.report_only) and path.exists():
        path.unlink()
    cells = load_cells(path)
    if args.report_only:
        print(write_outputs(out, cells, args.model))
        return 0

    import torch

    from kvd_transformers.report import metrics, prompts
    from kvd_transformers.report.cell import _kept_fraction
    from kvd_transformers.report.daemon import stage_logger, study_client
    from kvd_transformers.layout import layer_windows_of
    from kvd_transformers.report.grid import full_layer_fraction, load_model
    from kvd_transformers.report.prefill import restore, run_prefill

    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    texts = TEXTS[:args.texts]
    want = {v.strip() for v in args.variants.split(",") if v.strip()}
    variants = [(label, p) for label, p in VARIANTS if not want or label in want]
    log = stage_logger("dbudget")
    model, tok, model_name, layout = load_model(args.model)
    windows = layer_windows_of(model)
    if any(windows):
        layout = {**layout, "layer_windows": windows}
    with study_client(args, REPO, max(lengths) + 64, log, model=model_name, layout=layout) as client:
        ids = prompts.corpus_ids(tok)
        need = max(texts) + max(lengths) + prompts.CONTINUATION
        if len(ids) < need:
            raise SystemExit(f"the license corpus has {len(ids)} tokens; the texts need {need}")
        for L in lengths:
            for t in texts:
                todo = [(label, p) for label, p in variants if cell_key(label, L, t) not in cells]
                if not todo:
                    continue
                span = ids[t:t + L + prompts.CONTINUATION]
                prompt, cont = torch.tensor([span[:L]]), torch.tensor([span[L:]])
                pre = run_prefill(model, client, model_name, prompt, WINDOW)
                cache, _ = restore(model, client, model_name, pre, WINDOW)
                try:
                    ref_logp = metrics.teacher_forced_logprobs(model, cache, cont)
                finally:
                    cache.release()
                for label, params in todo:
                    cache, resp = restore(model, client, model_name, pre, WINDOW, "dbudgetkv", "", params)
                    try:
                        frac = _kept_fraction(client, cache, L)[0]
                        frac_full = full_layer_fraction(client.query(cache.sequence_id, mode="metadata"),
                                                        cache.windows, L)
                        kl = metrics.kl_per_position(ref_logp, metrics.teacher_forced_logprobs(model, cache, cont))
                    finally:
                        cache.release()
                    row = {"key": cell_key(label, L, t), "variant": label, "params": params, "length": L,
                           "text": t, "kv_fraction": float(frac), "kv_fraction_full_layers": frac_full,
                           "kl_mean": float(kl.mean()),
                           "kl_max": float(kl.max()), "compact_ms": resp.elapsed_ns / 1e6}
                    cells[row["key"]] = row
                    with open(path, "a") as f:
                        f.write(json.dumps(row, sort_keys=True) + "\n")
                    log(f"L={L} text@{t} {label}: kept {frac:.3f} KL {row['kl_mean']:.4f}")
                del pre
        print(write_outputs(out, cells, args.model))
        return 0


if __name__ == "__main__":
    sys.exit(main())
