"""``python -m kvd_transformers.report.grid``: the statistics grid of the quality report.

Per model and prompt length (512–4096): ``--prompts`` needle prompts of each kind
(:mod:`.needles`) and ``--texts`` KL texts (disjoint license spans, :data:`KL_STARTS`), every
method of :mod:`.grid_methods` on each. One uncompressed prefill per prompt, replayed into a fresh
kvd sequence per method (:mod:`.prefill`). Every (prompt, method) is one checkpoint line in
``<out>/grid-<model>.jsonl``, written as soon as it is done, so ``--resume`` continues a killed run.
``--report-only`` rebuilds the tables and plots (:mod:`.grid_doc`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from kvd_transformers.report.daemon import add_daemon_args

REPO = Path(__file__).resolve().parents[4]
# KL texts: starts (corpus tokens) of spans of L + 32 tokens, disjoint from each other for every
# length up to 4096 and clear of the DBudgetKV study's texts (8000, 28000, 36000, 44000 + 4128),
# on which the DBudgetKV default was chosen, so they are held-out for it.
KL_STARTS = [1200, 12200, 16400, 23600]


def _ints(s: str) -> list:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.report.grid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_daemon_args(p, model=True)
    p.add_argument("--out", default="results/stats")
    p.add_argument("--resume", action="store_true", help="keep finished lines of the checkpoint")
    p.add_argument("--report-only", action="store_true", help="only rebuild tables/plots/docs")
    p.add_argument("--lengths", type=_ints, default=[512, 1024, 2048, 4096])
    p.add_argument("--prompts", type=int, default=20, help="needle prompts per (kind, length)")
    p.add_argument("--kinds", default="numbers,places")
    p.add_argument("--texts", type=int, default=len(KL_STARTS), help="KL texts per length")
    p.add_argument("--budget", type=int, default=128)
    p.add_argument("--seeds", type=_ints, default=[1, 2, 3, 4, 5], help="BalanceKV seeds")
    p.add_argument("--seed", type=int, default=0, help="needle generation seed")
    p.add_argument("--methods", default="", help="comma list (default: all; full always runs)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["kl", "needles"], help="run only the KL texts or only the needles")
    p.add_argument("--reverse", action="store_true",
                   help="needle prompts of a length from the last index down (a second part "
                        "walking the same cells from the other end)")
    p.add_argument("--start-index", type=int, default=0,
                   help="needle prompts of a length from this index on (wrapping), for a third part")
    p.add_argument("--part", default="", help="checkpoint name suffix, for runs split over processes "
                   "(the tables read every grid-<model>*.jsonl)")
    p.add_argument("--docs", default=str(REPO / "docs" / "QUALITY.md"))
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--plots", default=str(REPO / "docs" / "quality"), help="folder for the PNGs")
    a = p.parse_args(argv)
    if not a.report_only and not a.endpoint and not a.start_daemon:
        p.error("give --endpoint or --start-daemon")
    if a.prompts < 1 or a.texts < 1 or a.texts > len(KL_STARTS) or a.budget < 1:
        p.error(f"--prompts ≥ 1, 1 ≤ --texts ≤ {len(KL_STARTS)}, --budget ≥ 1")
    return a


def load_model(name: str):
    """``(model, tokenizer, kvd model name, layout)``."""
    if name == "smollm2-135m":
        from kvd_transformers.report.daemon import LAYOUT, MODEL
        from kvd_transformers.report.model import load

        model, tok = load()
        return model, tok, MODEL, dict(LAYOUT)
    try:
        from kvd_transformers import models  # the model registry (helper branch gemma)
    except ImportError:
        raise SystemExit(f"model {name!r} needs kvd_transformers.models (not in this tree)")
    from kvd_transformers.layout import model_layout_of

    model, tok = models.load(name)
    return model.eval(), tok, models.get(name).kvd_model, model_layout_of(model)


def kl_ids(corpus: list, length: int, text: int, cont: int):
    import torch

    start = KL_STARTS[text]
    span = corpus[start:start + length + cont]
    if len(span) < length + cont:
        raise ValueError(f"corpus too short for KL text {text} at {length} tokens")
    return torch.tensor([span[:length]]), torch.tensor([span[length:]])


def greedy_until(model, tok, cache, first_logits, needle, max_new: int = 16) -> list:
    """Greedy decoding (as :func:`.metrics.greedy`) that stops early once the answer is correct:
    the hit is "the answer appears in the first ``max_new`` tokens", so stopping at the first hit
    gives the same outcome with fewer forwards (a miss still runs all ``max_new``)."""
    import torch

    from kvd_transformers.report import needles

    eos = model.config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    t = int(first_logits.argmax())
    out = [t]
    with torch.no_grad():
        while len(out) < max_new and t not in eos:
            text = tok.decode(out, skip_special_tokens=True)
            # a match followed by a non-alphanumeric character stays a match whatever comes next
            if text and not text[-1].isalnum() and needles.is_correct(needle, text):
                break
            logits = model(input_ids=torch.tensor([[t]]), cache=cache, use_cache=True).logits
            t = int(logits[0, -1].argmax())
            out.append(t)
    return out


def method_defaults(client, method: str) -> dict:
    """The daemon's default parameters of ``method`` (from Hello), so the tables name the defaults
    the rows were measured with."""
    for m in client.hello().methods:
        if m.name == method:
            return {p.name: p.default_value for p in m.params}
    return {}


def full_layer_fraction(kept, windows: list, length: int):
    """Tokens held in the full-attention layers (window 0) / (those layers × KV heads × prompt):
    the share of what a compaction method may drop that it kept. None for a model without sliding
    layers (there it equals ``kv_fraction``). On Gemma 3 the methods leave sliding layers whole, so
    "DBudgetKV drops ≥ 25 %" is judged on these layers (docs/QUALITY.md)."""
    full = [l for l, w in enumerate(windows) if not w]
    if len(full) == len(windows) or not full:
        return None
    heads = len(kept) // len(windows)
    held = sum(len(kept[l, h].positions) for l in full for h in range(heads))
    return held / (len(full) * heads * length)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kvd_transformers.report import grid_doc, interrupt
    from kvd_transformers.report.checkpoint import Checkpoint

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(out / f"grid-{args.model}{args.part}.jsonl", resume=args.resume or args.report_only)
    if not args.report_only:
        interrupt.install()
        try:
            _run(args, out, ckpt)
        except KeyboardInterrupt as e:
            print(f"[grid] interrupted ({e}); rerun with --resume", file=sys.stderr)
            return 130
    grid_doc.write_all(out, None if args.no_docs else Path(args.docs), Path(args.plots))
    return 0


def _run(args, out: Path, ckpt) -> None:
    import numpy as np
    import torch

    from kvd import Client
    from kvd_transformers.report import grid_methods as gm
    from kvd_transformers.report import metrics, needles
    from kvd_transformers.report.cell import _kept_fraction
    from kvd_transformers.report.daemon import TempDaemon, find_kvd, stage_logger
    from kvd_transformers.report.methods import WINDOW
    from kvd_transformers.report.prefill import restore, run_prefill
    from kvd_transformers.report.prompts import CONTINUATION

    torch.set_num_threads(args.threads)
    log = stage_logger("grid")
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()] or None
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    scores_path = REPO / "Config" / "head_scores" / f"{args.model}.json"
    ctx = {"scores": scores_path.name, "scores_hash": gm.file_hash(scores_path),
           "alias_map": gm.model_alias_map(REPO / "Config" / "kvd.yaml", args.model)}
    nm = gm.needle_methods(args.budget, wanted)
    km = gm.kl_methods(args.budget, args.seeds, wanted)
    if not ctx["alias_map"]:
        log(f"{args.model}: the shipped sharing policy has no alias map: KVSharer skipped")
        nm = [m for m in nm if m.label != "kvsharer shipped"]
        km = [m for m in km if m.label != "kvsharer shipped"]
    if not scores_path.is_file():
        log(f"{scores_path} absent: HeadKV skipped")
        nm = [m for m in nm if m.label != "headkv"]
        km = [m for m in km if m.label != "headkv"]

    def key(kind, L, idx, m):
        return f"{args.model}|{kind}|{L}|{idx}|{args.seed if kind != 'kl' else '-'}|{m.name}|{m.budget}|{gm.tag(m, ctx)}"

    # Rows any part has finished count as done (parts split one grid over processes); re-read
    # before every prompt, so parts walking the same cells from both ends skip each other's.
    from kvd_transformers.report.checkpoint import read_rows

    def refresh():
        for other in sorted(out.glob(f"grid-{args.model}*.jsonl")):
            if other != ckpt.path:
                ckpt.rows.update(read_rows(other))
    refresh()
    jobs = []  # (kind, L, idx, [methods pending])
    for L in args.lengths:
        for t in range(args.texts if args.only != "needles" else 0):
            todo = [m for m in km if not ckpt.done(key("kl", L, t, m))]
            if todo:
                jobs.append(("kl", L, t, todo))
        n = args.prompts if args.only != "kl" else 0
        order = [(args.start_index + j) % n for j in range(n)] if n else []
        for i in (reversed(order) if args.reverse else order):  # kinds interleaved
            for kind in kinds:
                todo = [m for m in nm if not ckpt.done(key(kind, L, i, m))]
                if todo:
                    jobs.append((kind, L, i, todo))
    log(f"{len(jobs)} prompts with work pending")
    if not jobs:
        return

    model, tok, model_name, layout = load_model(args.model)
    from kvd_transformers.layout import layer_windows_of
    log(f"{args.model} loaded")
    corp = needles.corpora(tok)
    daemon = None
    if args.start_daemon:
        policies = {}
        # The model's own f32 layout, with its per-layer windows (Gemma 3), under the name the
        # cache asks for.
        windows = layer_windows_of(model)
        daemon = TempDaemon(find_kvd(REPO, args.kvd_bin), max(args.lengths) + 64, policies,
                            file_dirs=[scores_path.parent], model=model_name,
                            layout={**layout, **({"layer_windows": windows} if any(windows) else {})}).start()
        log(f"started {daemon.binary}")
    client = Client(daemon.endpoint if daemon else args.endpoint, timeout_ms=600000)
    meta = {"model": args.model, "budget": args.budget, "kvd": str(daemon.binary.name) if daemon else "external",
            "alias_map": ctx["alias_map"], "scores_hash": ctx["scores_hash"], "threads": args.threads,
            "dbudgetkv_defaults": method_defaults(client, "dbudgetkv")}
    (out / f"grid-{args.model}.meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    try:
        for kind, L, idx, todo in jobs:
            refresh()
            todo = [m for m in todo if not ckpt.done(key(kind, L, idx, m))]
            if not todo:
                continue
            t0 = time.monotonic()
            if kind == "kl":
                ids, cont = kl_ids(corp["numbers"], L, idx, CONTINUATION)
                needle = None
            else:
                needle = needles.make_needle(kind, L, idx, args.prompts, args.seed, len(corp[kind]))
                ids, fact_pos = needles.build(tok, corp[kind], needle, L)
            pre = run_prefill(model, client, model_name, ids, WINDOW)
            t_pre = time.monotonic() - t0
            ref = None
            run = [m for m in (nm if needle else km)]
            # the full cache first: the KL reference (and the needle baseline) even when done
            for m in run:
                if m not in todo and not (kind == "kl" and m.label == "full"):
                    continue
                t1 = time.monotonic()
                req = gm.request(m, pre.length, ctx)
                cache, resp = restore(model, client, model_name, pre, WINDOW, req["method"],
                                      req["policy"], req["params"])
                try:
                    frac = _kept_fraction(client, cache, pre.length)[0]
                    if needle is None:
                        kept = client.query(cache.sequence_id, copy=True)
                        logp = metrics.teacher_forced_logprobs(model, cache, cont)
                    else:
                        new = greedy_until(model, tok, cache, pre.last_logits, needle)
                finally:
                    cache.release()
                row = {"key": key(kind, L, idx, m), "model": args.model, "kind": kind,
                       "length": L, "index": idx, "method": m.label, "seed": m.seed,
                       "budget": m.budget, "prompt_tokens": pre.length, "kv_fraction": float(frac),
                       "request": req, "scores_hash": ctx["scores_hash"] if m.label == "headkv" else None,
                       "compact_ms": (resp.elapsed_ns / 1e6) if resp is not None else 0.0}
                if needle is None:
                    if m.label == "full":
                        ref = logp
                    kl = metrics.kl_per_position(ref, logp)
                    last_q = [q[:, -1:, :].numpy() for q in pre.queries]
                    err = metrics.attention_errors(last_q, pre.keys, pre.values, kept, pre.full_layers)
                    row.update(kl_mean=float(kl.mean()), kl=[float(x) for x in kl],
                               attn_err=float(err.mean()),
                               kv_fraction_full_layers=full_layer_fraction(kept, cache.windows, pre.length))
                    msg = f"KL {row['kl_mean']:.4f} err {row['attn_err']:.3f}"
                else:
                    text = tok.decode(new, skip_special_tokens=True)
                    row.update(depth=needle.depth, offset=needle.offset, answer=needle.answer,
                               fact_token=int(fact_pos), text=text.strip(),
                               hit=bool(needles.is_correct(needle, text)))
                    msg = f"hit {row['hit']} ({row['text'][:40]!r})"
                row["wall_s"] = time.monotonic() - t1
                if m in todo:
                    ckpt.add(row)
                log(f"{kind} L={L} #{idx} {m.name}: kv {frac:.3f} {msg} ({row['wall_s']:.1f} s)")
            log(f"{kind} L={L} #{idx}: prefill {t_pre:.1f} s, total {time.monotonic() - t0:.1f} s")
            del pre
    finally:
        client.close()
        if daemon is not None:
            daemon.stop()


if __name__ == "__main__":
    sys.exit(main())
