"""Compare HeadKV score files on the held-apart dev set (``devset.py``) through a real kvd.

    python -m kvd_transformers.calibrate.headkv_dev --scores old=Config/head_scores/smollm2-135m.json \
        --scores new=/tmp/new.json --out dev.jsonl

As the quality report does: each dev prompt is prefilled once through a full KvdCache, its K/V
appended to a fresh kvd sequence per row, compacted with the prefill's last 32 queries and answered
greedily (SmolLM2, 16 tokens, the first line judged by ``needles.is_correct``). Rows: the full cache,
StreamingLLM, SnapKV and HeadKV with each score file, at every ``--budgets`` B (tokens per head
outside the 32-query window; StreamingLLM keeps 4 sinks + B + 28 recent). At B = 256 HeadKV also
takes the ``calibrated`` policy's beta 1.01, so on the 1024-token dev prompts that row is the
bundled default (25% of the KV plus the window). Rows are appended to ``--out`` (JSON lines) as they
finish; rerunning resumes and only computes missing (prompt, row) pairs, so score files can be
added later. ``--table`` prints the hit counts with 95% Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

WINDOW = 32


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.calibrate.headkv_dev")
    p.add_argument("--scores", action="append", default=[], metavar="LABEL=FILE",
                   help="a HeadKV score file to compare (repeatable)")
    p.add_argument("--out", required=True, help="results, JSON lines (resumed)")
    p.add_argument("--count", type=int, default=30, help="dev prompts (default 30)")
    p.add_argument("--length", type=int, default=1024, help="prompt tokens (default 1024)")
    p.add_argument("--budgets", default="128,256", help="budgets B (default 128,256)")
    p.add_argument("--baselines", default="full,streamingllm,snapkv",
                   help="rows besides HeadKV (default full,streamingllm,snapkv; '' = none)")
    p.add_argument("--kvd-bin", default="", help="kvd binary (default: the repo's newest build)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shard", default="0/1", metavar="K/N",
                   help="only the prompts with index mod N = K (parallel runs appending to one "
                        "--out; default 0/1 = all)")
    p.add_argument("--table", action="store_true", help="only print the table of --out")
    args = p.parse_args(argv)
    try:
        args.budgets = [int(x) for x in args.budgets.split(",") if x.strip()]
        args.scores = [tuple(s.split("=", 1)) for s in args.scores]
    except ValueError:
        p.error("--budgets takes integers, --scores LABEL=FILE")
    if any(len(s) != 2 or not s[0] for s in args.scores):
        p.error("--scores takes LABEL=FILE")
    if not 1 <= args.count <= 1000 or not 64 <= args.length <= 8192 or \
            any(not 1 <= b <= 8192 for b in args.budgets):
        p.error("--count 1..1000, --length 64..8192, --budgets 1..8192")
    args.baselines = [x for x in args.baselines.split(",") if x]
    try:
        k, n = (int(x) for x in args.shard.split("/"))
    except ValueError:
        p.error("--shard takes K/N, e.g. 1/3")
    if not 0 <= k < n <= 64:
        p.error("--shard K/N needs 0 <= K < N <= 64")
    args.shard = (k, n)
    return args


def rows(args) -> list[tuple[str, dict]]:
    """``(row label, Compact request)`` for every row; scores are named by the copied file."""
    out = []
    if "full" in args.baselines:
        out.append(("full", {"method": "", "params": {}}))
    for b in args.budgets:
        if "streamingllm" in args.baselines:
            out.append((f"streamingllm@{b}", {"method": "streamingllm",
                                              "params": {"sinks": 4, "recent": b + WINDOW - 4}}))
        if "snapkv" in args.baselines:
            out.append((f"snapkv@{b}", {"method": "snapkv", "params": {"budget": b}}))
        for label, _ in args.scores:
            params = {"budget": b, "scores": f"{label}.json"}
            if b == 256:
                params["beta"] = 1.01
            out.append((f"headkv-{label}@{b}", {"method": "headkv", "params": params}))
    return out


def read_done(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(r["prompt"], r["row"])] = r
    return done


def table(path: Path) -> str:
    from kvd_transformers.calibrate.wilson import wilson

    done = read_done(path)
    labels = sorted({r for _, r in done}, key=lambda r: (r.split("@")[-1].zfill(6)
                                                         if "@" in r else "", r))
    # Only prompts that have every row, so all rows are counted over the same prompts.
    prompts = {p for p, _ in done}
    complete = {p for p in prompts if all((p, lab) in done for lab in labels)}
    done = {key: r for key, r in done.items() if key[0] in complete}
    lines = [f"{len(complete)} dev prompts with every row (of {len(prompts)} started)", "",
             "| row | correct | rate | 95% Wilson | retrieval | reasoning |",
             "|---|---|---|---|---|---|"]
    for lab in labels:
        rs = [r for (_, l), r in done.items() if l == lab]
        k, n = sum(r["correct"] for r in rs), len(rs)
        lo, hi = wilson(k, n)
        part = {t: (sum(r["correct"] for r in rs if r["task"] == t),
                    sum(1 for r in rs if r["task"] == t)) for t in ("retrieval", "reasoning")}
        lines.append(f"| {lab} | {k}/{n} | {k / max(n, 1):.2f} | {lo:.2f}–{hi:.2f} | "
                     f"{part['retrieval'][0]}/{part['retrieval'][1]} | "
                     f"{part['reasoning'][0]}/{part['reasoning'][1]} |")
    return "\n".join(lines)


def run(args) -> int:
    out = Path(args.out)
    if args.table:
        print(table(out))
        return 0
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kvd import Client
    from kvd_transformers.calibrate import devset, prompts
    from kvd_transformers.calibrate.modelload import set_threads
    from kvd_transformers.calibrate.needles import is_correct
    from kvd_transformers.report import metrics
    from kvd_transformers.report.daemon import MODEL, TempDaemon, find_kvd
    from kvd_transformers.report.model import load
    from kvd_transformers.report.prefill import restore, run_prefill

    def stop(signum, frame):  # SIGTERM: leave through the finally below (stops the daemon)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    set_threads(args.threads)
    repo = Path(__file__).resolve().parents[4]
    files = Path(tempfile.mkdtemp(prefix="kvd-headkv-dev-"))
    for label, path in args.scores:
        shutil.copyfile(path, files / f"{label}.json")
    todo = rows(args)
    done = read_done(out)
    items = [it for it in devset.dev_items(args.count, args.length)
             if it.index % args.shard[1] == args.shard[0]]
    model, tok = load()
    daemon = TempDaemon(find_kvd(repo, args.kvd_bin), args.length + 256, {},
                        file_dirs=[files]).start()
    client = Client(daemon.endpoint, timeout_ms=600000)
    try:
        with out.open("a") as sink:
            for it in items:
                missing = [(lab, req) for lab, req in todo if (it.index, lab) not in done]
                if not missing:
                    continue
                ids, _ = prompts.build(tok, it.needle, it.length, it.depth, it.seed, "dev")
                pre = run_prefill(model, client, MODEL, ids, WINDOW)
                for lab, req in missing:
                    cache, _ = restore(model, client, MODEL, pre, WINDOW, req["method"], "",
                                       req["params"])
                    try:
                        new = metrics.greedy(model, cache, pre.last_logits)
                    finally:
                        cache.release()
                    text = tok.decode(new, skip_special_tokens=True).strip().split("\n")[0]
                    r = {"prompt": it.index, "row": lab, "template": it.needle.template,
                         "task": it.needle.task, "depth": it.depth, "tokens": pre.length,
                         "answer": it.needle.answer, "generated": text,
                         "correct": is_correct(it.needle, text)}
                    sink.write(json.dumps(r) + "\n")
                    sink.flush()
                    done[(it.index, lab)] = r
                print(f"[headkv_dev] prompt {it.index + 1}/{args.count}: "
                      + ", ".join(f"{lab} {'+' if done[(it.index, lab)]['correct'] else '-'}"
                                  for lab, _ in todo), file=sys.stderr, flush=True)
    finally:
        client.close()
        daemon.stop()
        shutil.rmtree(files, ignore_errors=True)
    print(table(out))
    return 0


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
