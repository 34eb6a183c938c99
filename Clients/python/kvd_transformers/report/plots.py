"""``accuracy_vs_kv.png`` and ``kl_vs_kv.png``: one panel per prompt length, one line per method
(points = budgets), x = KV fraction kept; the full cache's KL (0) is left off the log axis."""

from __future__ import annotations

from pathlib import Path


def _plot(rows: list, metric: str, ylabel: str, path: Path, log_y: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(1, max(len(lengths), 1), figsize=(5.5 * max(len(lengths), 1), 4.5),
                             squeeze=False)
    methods = sorted({(r["order"], r["method"]) for r in rows})
    cmap = plt.get_cmap("tab20")
    for ax, L in zip(axes[0], lengths):
        for i, (_, m) in enumerate(methods):
            pts = sorted((r["kv_fraction"], r[metric]) for r in rows
                         if r["length"] == L and r["method"] == m
                         and not (log_y and r[metric] <= 0))  # the full cache's KL is 0
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", ms=4, label=m, color=cmap(i % 20),
                    linestyle="-" if len(pts) > 1 else "none")
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("KV fraction kept")
        ax.set_ylabel(ylabel)
        ax.set_title(f"~{L}-token prompts")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=8, loc="center right")
    fig.subplots_adjust(right=0.86)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rows: list, out: Path) -> None:
    if not rows:
        return
    _plot(rows, "needle_accuracy", "needle accuracy", out / "accuracy_vs_kv.png", log_y=False)
    _plot(rows, "kl_mean", "mean KL vs full cache (nats)", out / "kl_vs_kv.png", log_y=True)
