"""docs/QUALITY.md: how the report is made, the table, and the papers' expectations checked."""

from __future__ import annotations

from pathlib import Path


def write(path: Path, md: str, rows: list, meta: dict) -> None:
    from kvd_transformers.report import claims, table

    notes_md = "\n".join(f"- {v}" for _, v in sorted((meta.get("notes") or {}).items()))
    keep = ""
    if path.exists():  # hand-written discussion between the markers survives a rerun
        old = path.read_text()
        a, b = old.find("<!-- discussion:begin -->"), old.find("<!-- discussion:end -->")
        if a >= 0 and b > a:
            keep = old[a:b + len("<!-- discussion:end -->")]
    if not keep:
        keep = "<!-- discussion:begin -->\n<!-- discussion:end -->"
    # The statistics grid's section (python -m kvd_transformers.report.grid) stays on top.
    from kvd_transformers.report.grid_doc import BEGIN, END
    stats_block = ""
    if path.exists():
        old = path.read_text()
        a, b = old.find(BEGIN), old.find(END)
        if a >= 0 and b > a:
            stats_block = old[a:b + len(END)] + "\n\n"
    text = f"""# Compaction quality on a real model

{stats_block}## Exploratory grid (one KL text and 3 needle prompts per cell)

Every method at four budgets; one needle answer moves a cell by 33 points, so read these tables
for trends and the statistics grid above for claims.

SmolLM2-135M-Instruct (f32, 30 layers × 3 KV heads × head_dim 64, 9 query heads) through
`kvd_transformers.KvdCache` against a real kvd, every method of `Plugins/README.md` on the same
prompts. Regenerate (minutes, not part of CI):

```sh
~/.cache/kvd/venv/bin/python -m kvd_transformers.report --start-daemon --out results/ --resume
```

(`--methods`, `--budgets`, `--lengths`, `--depths` run subsets; `--endpoint ipc://...` uses a
running kvd, which then needs the report's composition policies; `--report-only` rebuilds the
outputs from `results/checkpoint.jsonl`.) Prompts are text from `/usr/share/common-licenses`
(the calibration tools use `pydoc_data.topics`, so they never overlap). Each prompt is prefilled
once with the full cache; for each method the report appends that K/V to a new kvd sequence,
compacts it with the prefill's last 32 queries (as `KvdCache(compact_after_prefill=True)` does) and
continues from there. Parameters without a budget: StreamingLLM keeps sinks 4 + recent (B + 28),
the same total as a budgeted method (B + 32 with the window); BalanceKV (sinks 32, recent 32) uses
the `itrs` whose kept size is nearest B + 32 (the actual fraction is in the table); DBudgetKV and
KVSharer alone have no budget (one row per length). Plots: `results/accuracy_vs_kv.png`,
`results/kl_vs_kv.png`.

{table.LEGEND}

{notes_md}

{md}

## Expectations from the papers

{claims.section(rows)}

{keep}
"""
    path.write_text(text)
