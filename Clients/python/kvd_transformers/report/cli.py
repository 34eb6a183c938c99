"""``python -m kvd_transformers.report``: arguments and the main loop."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from kvd_transformers.report.daemon import add_daemon_args

REPO = Path(__file__).resolve().parents[4]
MODEL_NAME = "smollm2-135m-f32"
SCORES = REPO / "Config" / "head_scores" / "smollm2-135m.json"
CHECKPOINT = "checkpoint.jsonl"
META = "run_meta.json"


def _floats(s: str) -> list:
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s: str) -> list:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.report", description=__doc__)
    add_daemon_args(p)
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--resume", action="store_true", help="keep finished rows of the checkpoint")
    p.add_argument("--methods", default="", help="comma list of methods (default: all)")
    p.add_argument("--budgets", type=_ints, default=[32, 64, 128, 256])
    p.add_argument("--lengths", type=_ints, default=[512, 1024, 2048])
    p.add_argument("--depths", type=_floats, default=[0.1, 0.5, 0.9])
    p.add_argument("--docs", default=str(REPO / "docs" / "QUALITY.md"),
                   help="copy the table into this Markdown file (default docs/QUALITY.md)")
    p.add_argument("--no-docs", action="store_true", help="do not write the docs file")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild quality.md, plots and docs from the checkpoint")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    if not a.report_only and not a.endpoint and not a.start_daemon:
        p.error("give --endpoint or --start-daemon")
    return a


def write_outputs(args, out: Path, ckpt, meta: dict) -> None:
    from kvd_transformers.report import docs, plots, table

    rows = ckpt.all_rows()
    md = table.markdown(rows)
    (out / "quality.md").write_text(table.document(md, meta))
    plots.write(rows, out)
    if not args.no_docs and args.docs:
        docs.write(Path(args.docs), md, rows, meta)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kvd_transformers.report import interrupt
    from kvd_transformers.report.checkpoint import Checkpoint

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(out / CHECKPOINT, resume=args.resume or args.report_only)
    meta_path = out / META
    meta = json.loads(meta_path.read_text()) if meta_path.exists() and (args.resume or args.report_only) else {}
    if args.report_only:
        write_outputs(args, out, ckpt, meta)
        return 0

    interrupt.install()

    try:
        return _run(args, out, ckpt, meta, meta_path)
    except KeyboardInterrupt as e:
        print(f"[report] interrupted ({e or 'SIGINT'}); finished rows are in {ckpt.path}; "
              "rerun with --resume", file=sys.stderr)
        return 130


def _run(args, out, ckpt, meta, meta_path) -> int:
    import torch

    from kvd import Client
    from kvd_transformers.report.model import load as load_model
    from kvd_transformers.report import methods, prompts, sharing
    from kvd_transformers.report.cell import LengthPrompts, run_cell
    from kvd_transformers.report.checkpoint import row_key
    from kvd_transformers.report.daemon import TempDaemon, find_kvd
    from kvd_transformers.report.prefill import run_prefill
    from kvd_transformers.report.progress import Progress

    if args.threads:
        torch.set_num_threads(args.threads)
    variants = methods.select([m.strip() for m in args.methods.split(",") if m.strip()]
                              or methods.ALL_FAMILIES)
    scores = str(SCORES) if SCORES.is_file() else None
    notes = meta.setdefault("notes", {})
    if scores is None and any("scores" in v.needs for v in variants):
        notes["headkv"] = (f"HeadKV rows skipped: {SCORES.relative_to(REPO)} is absent "
                           "(rerun with --resume --methods headkv once it exists).")
        variants = [v for v in variants if "scores" not in v.needs]
    elif scores:
        notes["headkv"] = f"HeadKV head scores: {SCORES.relative_to(REPO)}."
    meta["window"] = methods.WINDOW

    cells = [(L, v, b) for L in args.lengths for v in variants
             for b in (args.budgets if v.budgeted else [None])]
    pending = [c for c in cells if not ckpt.done(row_key(c[1].label, c[2], c[0], args.depths))]
    progress = Progress([c[0] for c in pending])
    progress.log(f"{len(cells)} rows, {len(cells) - len(pending)} already in {ckpt.path}, "
                 f"{len(pending)} to run")
    if not pending:
        write_outputs(args, out, ckpt, meta)
        return 0

    daemon = None
    if args.start_daemon:
        daemon = TempDaemon(find_kvd(REPO, args.kvd_bin), max(args.lengths) + 64,
                            methods.policies(scores), file_dirs=[SCORES.parent]).start()
        endpoint = daemon.endpoint
        progress.log(f"started {daemon.binary} at {endpoint}")
        kind = "debug" if "/debug/" in str(daemon.binary) else "release"
        notes["kvd"] = (f"kvd: `{daemon.binary.relative_to(REPO) if daemon.binary.is_relative_to(REPO) else daemon.binary}` "
                        f"({kind} build; compaction ms are of that build).")
    else:
        endpoint = args.endpoint
    client = Client(endpoint, timeout_ms=600000)
    try:
        model, tok = load_model()
        progress.log("SmolLM2-135M-Instruct loaded")
        # Requests name score files relative to the daemon's files.directories (the bundled config
        # and the report's own daemon both list Config/head_scores); policies keep the full path.
        ctx = {"scores": SCORES.name if scores else None}
        if any("alias_map" in v.needs for _, v, _ in pending):
            ctx["alias_map"], src = sharing.alias_map(REPO, model, tok, client, MODEL_NAME)
            notes["kvsharer"] = f"KVSharer map {ctx['alias_map']} ({src})."
            progress.log(notes["kvsharer"])
        meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True))
        ids = prompts.corpus_ids(tok)
        full = next(v for v in variants if v.label == "full")
        for L in args.lengths:
            todo = [c for c in pending if c[0] == L]
            if not todo:
                continue
            t0 = time.monotonic()
            kl_ids, cont = prompts.kl_prompt(ids, L)
            kl_pre = run_prefill(model, client, MODEL_NAME, kl_ids, methods.WINDOW)
            needles = []
            for d in args.depths:
                nids, answer = prompts.needle_prompt(tok, ids, L, d)
                needles.append((d, run_prefill(model, client, MODEL_NAME, nids, methods.WINDOW), answer))
            lp = LengthPrompts(L, kl_pre, cont, needles)
            progress.log(f"length {L}: {1 + len(needles)} prefills in {time.monotonic() - t0:.1f} s")
            if todo[0][1] is not full:  # the full-cache reference log-probs for KL
                run_cell(model, tok, client, MODEL_NAME, full, None, lp, ctx, methods.WINDOW)
            for _, v, b in todo:
                key = row_key(v.label, b, L, args.depths)
                try:
                    row = run_cell(model, tok, client, MODEL_NAME, v, b, lp, ctx, methods.WINDOW)
                except Exception as e:  # e.g. a policy the external daemon does not have
                    from kvd import KvdError
                    if not isinstance(e, KvdError):
                        raise
                    notes[v.label] = f"{v.label} skipped: {e}"
                    progress.step(L, f"{v.label} B={b} L={L}: SKIPPED ({e})")
                    continue
                row["key"] = key
                row["depths"] = args.depths
                ckpt.add(row)
                progress.step(L, f"{v.label} B={b if b is not None else '-'} L={L}: "
                                 f"kv {row['kv_fraction']:.3f} acc {row['needle_accuracy']:.2f} "
                                 f"KL {row['kl_mean']:.4f} err {row['attn_err']:.3f} "
                                 f"{row['compact_ms']:.1f} ms ({row['wall_s']:.1f} s)")
            del lp
        meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True))
        write_outputs(args, out, ckpt, meta)
        progress.log(f"wrote {out / 'quality.md'} and plots")
        return 0
    finally:
        client.close()
        if daemon is not None:
            daemon.stop()
