"""Layers shared vs next-token KL on held-out text, for KVSharer maps the calibration tool wrote.

    python -m kvd_transformers.calibrate.kvsharer_curve \\
        --map Config/kvsharer/smollm2-135m.map --map Config/kvsharer/smollm2-135m-cosine.map \\
        --json curve.json --markdown curve.md --plot docs/kvsharer_kl_curve.png

For each map file, for k = 1..N over its aliases in the order they were accepted (its
"# accepted in order" line): the mean KL(full ‖ shared) of the map of the first k aliases on the
held-out texts (:mod:`heldout`: license-corpus spans, never calibration text), the KL of the k-th
alias alone, and each text's KL. A file without that line counts as one map. No daemon needed: the
KL is the model-side one of :mod:`kl` (an aliased layer attends with its owner's K/V from the same
forward pass, as kvd's KvdCache does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kvd_transformers.calibrate.heldout import OFFSETS


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.calibrate.kvsharer_curve",
                                description="Held-out next-token KL of KVSharer maps, per number "
                                            "of shared layers.")
    p.add_argument("--map", action="append", required=True,
                   help="a map file of calibrate.kvsharer (repeat for several)")
    p.add_argument("--model", default="", help="as calibrate.kvsharer --model: smollm2-135m "
                   "(default), gemma3-270m, a directory or a .gguf file")
    p.add_argument("--tokens", type=int, default=512, help="tokens per held-out text (default 512)")
    p.add_argument("--offsets", default=",".join(map(str, OFFSETS)),
                   help="license-corpus token offsets of the held-out texts (default "
                        f"{','.join(map(str, OFFSETS))})")
    p.add_argument("--budget", type=float, default=0.05,
                   help="KL budget drawn on the plot and checked in the table (default 0.05)")
    p.add_argument("--json", default="", help="write the rows as JSON")
    p.add_argument("--markdown", default="", help="write the table as Markdown")
    p.add_argument("--plot", default="", help="write the curve as a PNG (needs matplotlib)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    args.offsets = [int(x) for x in args.offsets.split(",") if x.strip()]
    if args.tokens < 2 or not args.offsets:
        p.error("--tokens >= 2 and at least one offset")
    return args


def label_of(path: Path) -> str:
    """"kl ≤ 0.05" / "cosine ≥ 0.5" from the file's acceptance line, else the file name."""
    for line in path.read_text().splitlines():
        if line.startswith("# acceptance: kl"):
            return f"KL budget {line.split('<=')[1].split()[0]} (kvd)"
        if line.startswith("# acceptance: cosine"):
            return f"cosine >= {line.split('>=')[1].split()[0]} (paper)"
    return path.name


def prefixes(path: Path) -> list[tuple[str, dict[int, int]]]:
    """``(added alias, resolved map of the first k)`` for k = 1..N; the whole map if the file
    does not record the order. Checks that the last prefix is the file's map."""
    from kvd_transformers.calibrate.kvsharer import accepted_order, read_map
    from kvd_transformers.calibrate.sharing import resolve

    whole = {int(a): int(b) for a, b in (p.split(":") for p in read_map(path).split(",") if p)}
    order = accepted_order(path)
    if not order:
        return [("(whole map)", whole)]
    out = [(f"{i}:{j}", resolve(dict(order[:k]))) for k, (i, j) in enumerate(order, 1)]
    if out[-1][1] != whole:
        raise ValueError(f"{path}: its accepted order resolves to {out[-1][1]}, not its map "
                         f"{whole}")
    return out


def curve_rows(reference, maps: list[Path]) -> list[dict]:
    from kvd_transformers.calibrate.kvsharer import format_map

    rows = []
    for path in maps:
        label = label_of(path)
        for k, (added, amap) in enumerate(prefixes(path), 1):
            m = reference.measure(amap)
            alone = None
            if ":" in added:
                i, j = map(int, added.split(":"))
                alone = m.kl if k == 1 else reference.measure({i: j}).kl
            rows.append({"map": label, "file": path.name, "layers": len(amap), "added": added,
                         "alias_map": format_map(amap), "kl": m.kl, "kl_per_text": m.kl_per_text,
                         "cosine": m.cosine, "alone_kl": alone})
            print(f"kvsharer_curve: {label} k={len(amap)} {format_map(amap)}: KL {m.kl:.4f} "
                  f"(texts {', '.join(f'{x:.4f}' for x in m.kl_per_text)})", file=sys.stderr)
    return rows


def markdown(rows: list[dict], budget: float, tokens: int, offsets) -> str:
    head = ("| map | layers shared | alias added | its KL alone | KL of the map "
            f"| per text (min–max) | ≤ {budget} |\n|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        alone = "—" if r["alone_kl"] is None else f"{r['alone_kl']:.4f}"
        lines.append(f"| {r['map']} | {r['layers']} | {r['added']} | {alone} | {r['kl']:.4f} | "
                     f"{min(r['kl_per_text']):.4f}–{max(r['kl_per_text']):.4f} | "
                     f"{'yes' if r['kl'] <= budget else 'no'} |")
    note = (f"\nKL = mean over {len(offsets)} held-out texts × {tokens} tokens (license corpus at "
            f"token offsets {', '.join(map(str, offsets))}) and their positions of KL(full ‖ "
            "shared), nats; 'its KL alone' = that alias as the only one.\n")
    return head + "\n".join(lines) + "\n" + note


# Most bytes of float64 next-token distributions one batch may hold at once (the KL's temporaries):
# Gemma's 262144-token vocabulary makes one 1024-token text 2 GiB.
BATCH_BYTES = 1 << 30


def text_batch(tokens: int, vocab: int, texts: int) -> int:
    """Texts per forward: all of them when their float64 distributions fit ``BATCH_BYTES``, else
    as many as fit (at least 1)."""
    return max(1, min(texts, BATCH_BYTES // max(1, tokens * vocab * 8)))


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from kvd_transformers.calibrate import kl, sharing
    from kvd_transformers.calibrate.heldout import heldout_ids
    from kvd_transformers.calibrate.modelload import load_model, set_threads

    set_threads(args.threads)
    maps = [Path(m) for m in args.map]
    for m in maps:
        prefixes(m)  # fail on a bad file before loading the model
    t0 = time.monotonic()
    model, tokenizer = load_model(args.model, sharing.register())
    ids = torch.tensor(heldout_ids(tokenizer, args.tokens, args.offsets))
    reference = kl.Reference(model, ids, batch=text_batch(args.tokens, model.config.vocab_size,
                                                          len(args.offsets)))
    rows = curve_rows(reference, maps)
    table = markdown(rows, args.budget, args.tokens, args.offsets)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"tokens": args.tokens, "offsets": args.offsets,
                                               "budget": args.budget, "rows": rows}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.plot:
        from kvd_transformers.calibrate.curve_plot import plot_curve
        plot_curve(rows, args.budget, args.tokens, len(args.offsets), Path(args.plot))
    print(f"kvsharer_curve: {len(rows)} maps in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
