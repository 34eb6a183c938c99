"""Merges the peer and kvd JSON files of one run.sh run into peers.json and a Markdown table.

    python summarize.py OUT_DIR      (reads kvpress.json, kvd_compact.json, lmcache.json,
                                      kvd_datapath.json; writes peers.json and peers.md)
Standard library only: runs with any python3. A missing input (a peer that failed) leaves its
rows out and says so in the table.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path


def load(d: Path, name: str):
    p = d / name
    return json.loads(p.read_text()) if p.exists() else None


def mmm(s, fmt="{:.2f}"):
    return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max"))


def compaction_table(kvd) -> list[str]:
    lines = ["### Compaction: kvpress 0.5.5 (torch CPU, time in `compress` summed over layers) vs "
             "kvd (Compact round trip)", "",
             f"SmolLM2-135M, {kvd['tokens']} tokens, f32, window {kvd['window']}; ms as "
             "min / median / max; speedup = kvpress / kvd, of the medians and of the minima "
             "(the minima are the less noisy on a shared machine).", "",
             "| method | ratio | kept/head kvpress | kept/head kvd | kvpress ms | kvd ms | "
             "kvd server ms (median) | speedup (median) | speedup (min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in kvd["rows"]:
        sp = r["kvpress_ms"]["median"] / r["kvd_ms"]["median"]
        sp_min = r["kvpress_ms"]["min"] / r["kvd_ms"]["min"]
        r["speedup_median"], r["speedup_min"] = sp, sp_min
        lines.append(f"| {r['method']} | {r['ratio']} | {r['kept_tokens_per_head_kvpress']:.0f} | "
                     f"{r['kept_kvd']:.0f} | {mmm(r['kvpress_ms'])} | {mmm(r['kvd_ms'])} | "
                     f"{r['kvd_server_ms']['median']:.2f} | {sp:.2f}x | {sp_min:.2f}x |")
    return lines


def lmcache_table(lmc, kvd) -> tuple[list[str], list[dict]]:
    rows = []
    lat = [("tiny request p50 (us)", lmc["get_chunk_size_us"]["p50"], kvd["stats_us"]["p50"]),
           ("tiny request p99 (us)", lmc["get_chunk_size_us"]["p99"], kvd["stats_us"]["p99"])]
    fifths = [(lmc["get_chunk_size_us"].get("p50_of_fifths"), kvd["stats_us"].get("p50_of_fifths"))]
    lines = ["### LMCache 0.5.6 multiprocess server (its own client, tcp + CPU shared memory) vs "
             "kvd (Python client, tcp)", "",
             "Tiny request: LMCache `get_chunk_size` vs kvd `Stats`; ratio = LMCache / kvd "
             "(> 1: kvd faster).", "",
             "| row | LMCache | kvd | ratio |", "|---|---|---|---|"]
    for name, a, b in lat:
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
        rows.append({"row": name, "lmcache": a, "kvd": b, "ratio": a / b})
    for a, b in fifths:
        if a and b:
            lines.append(f"| p50 of each fifth of the run (us) | {mmm(a, '{:.0f}')} | "
                         f"{mmm(b, '{:.0f}')} | {a['min'] / b['min']:.2f}x (of the minima) |")
            rows.append({"row": "tiny request p50 of fifths", "lmcache": a, "kvd": b,
                         "ratio_of_minima": a["min"] / b["min"]})
    lines += ["", "Data path in GB/s, min / median / max; ratio = kvd median / LMCache median "
              "(> 1: kvd faster). LMCache store/retrieve move K+V between the worker's "
              "shared-memory KV tensor and the server.", "",
              "| row | MiB | LMCache GB/s | kvd GB/s | ratio |", "|---|---|---|---|---|"]
    kv = {(r["op"], r["mib"]): r["gb_per_s"] for r in kvd["rows"]}
    pairs = [("store", "append_zero_copy", "store vs append zero-copy"),
             ("store", "append_inline", "store vs append inline"),
             ("retrieve", "query_pages_copy", "retrieve vs query pages + copy out"),
             ("retrieve", "query_inline", "retrieve vs query inline")]
    for lr in lmc["rows"]:
        for lop, kop, name in pairs:
            a, b = lr[f"{lop}_gb_per_s"], kv.get((kop, lr["mib"]))
            if b is None:
                continue
            ratio = b["median"] / a["median"]
            lines.append(f"| {name} | {lr['mib']} | {mmm(a)} | {mmm(b)} | {ratio:.2f}x |")
            rows.append({"row": name, "mib": lr["mib"], "lmcache_gb_per_s": a, "kvd_gb_per_s": b,
                         "ratio": ratio})
    return lines, rows


def main():
    d = Path(sys.argv[1])
    kvp, kvc, lmc, kvdp = (load(d, n) for n in ("kvpress.json", "kvd_compact.json",
                                                "lmcache.json", "kvd_datapath.json"))
    md = [f"## kvd vs peers ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
          f"{platform.node()})", ""]
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "kvpress": kvp and
               {k: v for k, v in kvp.items() if k != "rows"}, "lmcache": lmc and
               {k: v for k, v in lmc.items() if k != "rows"}}
    if kvc:
        md += compaction_table(kvc) + [""]
        summary["compaction"] = kvc["rows"]
    else:
        md += ["(compaction rows missing: kvpress_peer.py or kvd_side.py compact failed)", ""]
    if lmc and kvdp:
        lines, rows = lmcache_table(lmc, kvdp)
        md += lines + [""]
        summary["lmcache_rows"] = rows
        summary["kvd_datapath"] = kvdp
    else:
        md += ["(LMCache rows missing: lmcache_peer.py or kvd_side.py datapath failed; see the "
               "logs in out/)", ""]
    (d / "peers.json").write_text(json.dumps(summary, indent=1))
    (d / "peers.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
