"""The benchmark suite runs end to end at tiny sizes (benchmarks are not tests: no speed is
asserted here, only that every section still measures something and reports it)."""
import json
import os
import re
import subprocess
import sys

from conftest import KVD_BIN, REPO


def test_suite_smoke_run_reports_every_section(tmp_path):
    env = dict(os.environ, KVD_BUILD_DIR=str(KVD_BIN.parent),
               PYTHONPATH=os.pathsep.join([str(REPO / "Clients" / "python"), str(REPO)]))
    out = subprocess.run([sys.executable, "-m", "Benchmarks.suite.run", "--smoke", "--runs", "1", "--out", str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = (tmp_path / "results-smoke.md").read_text()
    for title in ("1. Request overhead", "2. Data path", "3. Compaction", "4. Scale", "5. Memory", "6. Memory manager"):
        assert f"### {title}" in text, f"section {title!r} missing from:\n{text}"
    raw = json.loads((tmp_path / "results-smoke.json").read_text())
    # Real measurements, not placeholders: positive times and rates, every method, no errors.
    rtt = raw["rtt"][0]
    assert {(r["client"], r["transport"]) for r in rtt} == {("C", "ipc"), ("C", "tcp"), ("pyzmq", "ipc"), ("pyzmq", "tcp")}
    assert all(r.get("p50", r.get("p50_us", 0)) > 0 for r in rtt)
    data = {r["name"] for r in raw["data"][0]}
    assert {"append_inline", "append_zero_copy", "query_inline", "query_pages_copy", "memcpy", "echo"} <= data
    methods = {r["method"] for r in raw["compaction"][0]}
    assert {"streamingllm", "knorm", "snapkv", "h2o", "pyramidkv", "adakv", "headkv", "balancekv", "dbudgetkv"} <= methods
    assert all(r["best_s"] > 0 and r["roofline_s"] >= 0 for r in raw["compaction"][0])
    scale = raw["scale"][0]
    assert [r["clients"] for r in scale] == [1, 8] and all(r["errors"] == 0 and r["ops"] > 0 for r in scale)
    assert all(r["kv_bytes"] > 0 for r in raw["memory"][0])
    # The baseline never wakes the manager; the load on a full arena only fits because it acted.
    manager = {r["kind"]: r for r in raw["manager"][0]}
    tput, crossing = manager["throughput"], manager["high_to_low"]
    assert tput["empty"]["compactions"] + tput["empty"]["evictions"] == 0
    assert tput["reclaim"]["compactions"] > 0 and tput["ratio"] > 0
    assert not tput["empty"]["failures"] and not tput["reclaim"]["failures"]
    assert crossing["reached_low"] and crossing["failed_crossings"] == 0 and crossing["client_ms"] > 0
    # Section 10 (skipped without torch and the model): daemon 2 adopted only blocks it took from
    # Redis, none refused, and both warm runs generated the cold run's tokens.
    assert "### 10. Cross-daemon prefix hit" in text
    cross = raw["remote_prefix"][0][0]
    if "skipped" not in cross:
        assert cross["imported"] > 0 and cross["all_from_remote"] and cross["rejected"] == 0
        assert cross["identical"] and cross["local_identical"]
    # Section 11: the same round trips with metrics on (scraped meanwhile) and off, paired per round.
    assert "### 11. Metrics cost" in text
    cost = raw["metrics"][0]
    assert {r["request"] for r in cost} == {"stats", "stats_raw", "query_metadata", "query_metadata_raw"}
    assert all(r["on_p50"] > 0 and r["off_p50"] > 0 and r["ratio_p50"] > 0 for r in cost)
    # Section 12: every append mode, from C and Python, for both SmolLM2 dtypes, against the echo.
    assert "### 12. Append per decode step" in text
    append = raw["append"][0]
    assert {(r["client"], r["model"], r["name"]) for r in append} == {
        (c, m, n) for c in ("C", "python") for m in ("smollm2-135m", "smollm2-135m-f32")
        for n in ("echo", "inline", "reserve_commit", "keep_reserved", "pipelined", "pipelined_every8")}
    assert all(r["median"] > 0 and r["baseline_median"] > 0 for r in append)
    # Every goal column says yes or no; a table row never lost its cells.
    assert not re.search(r"\|\s*\|\s*$", text.split("### 3.")[0], re.M)
    # Section 13 (skipped without torch and the model): every configuration generated at a positive
    # rate, and the full caches' greedy tokens are plain transformers'.
    assert "### 13. KvdCache at transformers speed" in text
    runtime = raw["runtime"][0]
    if not any("skipped" in r for r in runtime):
        assert len(runtime) == 5 and all(r["prefill_tps"] > 0 and r["decode_tps"] > 0 for r in runtime)
        assert all(r["identical"] for r in runtime if "full" in r["config"] or r["config"].startswith("transformers"))
