"""The KVSharer curve as a PNG: layers shared vs held-out next-token KL, one line per map file,
the per-text range as bars, the KL budget as a dashed line (log scale: KL spans decades)."""

from __future__ import annotations

from pathlib import Path


def plot_curve(rows: list[dict], budget: float, tokens: int, texts: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label in dict.fromkeys(r["map"] for r in rows):
        pts = [r for r in rows if r["map"] == label]
        x = [r["layers"] for r in pts]
        y = [r["kl"] for r in pts]
        lo = [r["kl"] - min(r["kl_per_text"]) for r in pts]
        hi = [max(r["kl_per_text"]) - r["kl"] for r in pts]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=label)
    ax.axhline(budget, color="grey", linestyle="--", linewidth=1, label=f"budget {budget} nats")
    ax.set_yscale("log")
    ax.set_xlabel("layers shared (of 30)")
    ax.set_ylabel("mean KL(full ‖ shared), nats")
    ax.set_title(f"KVSharer on SmolLM2-135M: held-out KL ({texts} texts × {tokens} tokens)",
                 fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
