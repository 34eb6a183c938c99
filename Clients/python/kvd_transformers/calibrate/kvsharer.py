"""KVSharer layer alias map for kvd's ``kvsharer`` method / sharer.

    python -m kvd_transformers.calibrate.kvsharer --endpoint ipc:///tmp/kvd-default.sock \\
        --out Config/kvsharer/smollm2-135m.map

1. The model computes the K/V of the calibration texts (default 30 texts x 64 tokens from
   ``pydoc_data.topics``); each text goes to a new sequence of a kvd model with the same layout
   (``--kvd-model``, default: the first Hello lists with that layout).
2. kvd's RankLayers ranks the layer pairs (i > j) by the distance of their averaged caches, most
   dissimilar first; the sequences are then released.
3. Greedy, in that order: skip i if it is already shared; tentatively map i -> j (chains resolved);
   accept if the cosine similarity of the last hidden states (shared vs full, averaged over the
   texts' tokens) >= ``--threshold``; stop after ``--shares`` accepted layers.

Writes "i:j,..." (with a comment header) to ``--out`` and prints a policy snippet. Exit codes: 0
written; 2 bad options / checkpoint / kvd problem; 3 nothing accepted (no file); 75 stopped by
``--stop-after``; 130 interrupted (checkpoint kept; rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kvd_transformers.calibrate import checkpoint as ckpt

EXIT_OK, EXIT_USAGE, EXIT_NONE, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 2, 3, 75, 130


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.calibrate.kvsharer",
                                description="KVSharer alias map from kvd's RankLayers and the "
                                            "model's hidden-state check.")
    p.add_argument("--endpoint", default="ipc:///tmp/kvd-default.sock",
                   help="a running kvd whose config has a model with this model's layout "
                        "(default ipc:///tmp/kvd-default.sock)")
    p.add_argument("--kvd-model", default="", help="kvd model name (default: the first with the "
                   "model's layout)")
    p.add_argument("--model", default="", help="a transformers model directory, a .gguf file or "
                   "DIR:FILE.gguf (default: the bundled SmolLM2-135M-Instruct GGUF)")
    p.add_argument("--out", required=True, help="output map file (\"i:j,...\" after # comments)")
    p.add_argument("--texts", type=int, default=30, help="calibration texts (default 30)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per text (default 64)")
    p.add_argument("--seed", type=int, default=0, help="which pydoc topics (default 0)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="least cosine similarity of the last hidden states (default 0.5)")
    p.add_argument("--shares", type=int, default=4, help="layers to share, S (default 4)")
    p.add_argument("--timeout-ms", type=int, default=60000, help="kvd call timeout")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest on a shared machine; 0 = torch's "
                        "default)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt.json")
    p.add_argument("--stop-after", type=int, default=0,
                   help="check at most this many pairs in this run, then keep the checkpoint and "
                        "exit 75 (for time-sliced jobs and tests)")
    args = p.parse_args(argv)
    if args.texts < 1 or args.tokens < 2 or args.shares < 1:
        p.error("--texts >= 1, --tokens >= 2 and --shares >= 1")
    if not -1 <= args.threshold <= 1:
        p.error("--threshold is a cosine similarity in [-1, 1]")
    return args


def read_map(path) -> str:
    """The alias map of a file this tool wrote: the first line that is not blank or a comment."""
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    return ""


def format_map(aliases: dict[int, int]) -> str:
    return ",".join(f"{l}:{o}" for l, o in sorted(aliases.items(), reverse=True))


def policy_snippet(alias_map: str, name: str) -> str:
    return (f"policies:\n  {name}:\n    sharer: \"kvsharer\"\n    params:\n"
            f"      alias_map: \"{alias_map}\"\n"
            f"  # or after a method: {{method: \"snapkv\", sharer: \"kvsharer\", "
            f"params: {{budget: 128, alias_map: \"{alias_map}\"}}}}")


def rank_with_kvd(args, model, ids, kv, bar_label="kvsharer append"):
    """Append every text's K/V to its own kvd sequence, RankLayers, release; returns the pairs."""
    import numpy as np

    from kvd import Client, dtypes
    from kvd_transformers.calibrate.progress import Progress
    from kvd_transformers.layout import kvd_layout_of, model_layout_of

    want = model_layout_of(model.config)
    with Client(args.endpoint, timeout_ms=args.timeout_ms, client_name="kvd-calibrate") as c:
        hello = c.hello()
        models = c.models
        if args.kvd_model:
            if args.kvd_model not in models:
                raise RuntimeError(f"kvd at {args.endpoint} serves no model {args.kvd_model!r} "
                                   f"(it serves {sorted(models)})")
            name = args.kvd_model
            if kvd_layout_of(models[name]) != want:
                raise RuntimeError(f"kvd model {name!r} has layout {kvd_layout_of(models[name])}, "
                                   f"the model {want}")
        else:
            fits = [n for n, m in models.items() if kvd_layout_of(m) == want]
            if not fits:
                raise RuntimeError(
                    f"kvd at {args.endpoint} serves no model with this model's layout {want} "
                    f"(it serves {sorted(models)}); add one to its config (docs/CALIBRATION.md)")
            name = fits[0]
        dt = dtypes.to_numpy(models[name].dtype)
        chunk = max(1, min(args.tokens, int(hello.limits.max_tokens_per_append or args.tokens)))
        print(f"kvsharer: kvd model {name!r} ({np.dtype(dt).name}) at {args.endpoint}",
              file=sys.stderr)
        seqs = []
        bar = Progress(len(kv), bar_label)
        try:
            for k, v in kv:
                seq = c.create_sequence(name, tenant="calibration")
                seqs.append(seq)
                for s in range(0, k.shape[2], chunk):
                    c.append(seq, np.ascontiguousarray(k[:, :, s:s + chunk].astype(dt)),
                             np.ascontiguousarray(v[:, :, s:s + chunk].astype(dt)), zero_copy=True)
                bar.step()
            bar.close()
            pairs = c.rank_layers(seqs)
        finally:
            for seq in seqs:
                try:
                    c.release(seq)
                except Exception:  # noqa: BLE001 - best effort; the daemon frees on shutdown
                    pass
    return [[int(i), int(j), float(d)] for i, j, d in pairs], name


def run(args, loaded=None) -> int:
    out = Path(args.out)
    cpath = ckpt.checkpoint_path(out)
    settings = {"tool": "kvsharer", "model": args.model or "smollm2", "texts": args.texts,
                "tokens": args.tokens, "seed": args.seed, "threshold": args.threshold,
                "shares": args.shares}
    if args.resume:
        try:
            state = ckpt.load(cpath, settings)
        except ckpt.CheckpointError as e:
            print(f"kvsharer: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"kvsharer: resuming at pair {state['next']} with {len(state['aliases'])} accepted "
              f"from {cpath}", file=sys.stderr)
    else:
        state = {"ranking": None, "kvd_model": "", "next": 0, "aliases": {}, "tried": []}

    import torch

    from kvd_transformers.calibrate import sharing
    from kvd_transformers.calibrate.modelload import load_model
    from kvd_transformers.calibrate.progress import Progress
    from kvd_transformers.calibrate.texts import calibration_ids

    from kvd_transformers.calibrate.modelload import set_threads
    set_threads(args.threads)
    name = sharing.register()
    t0 = time.monotonic()
    previous = None
    if loaded is None:
        model, tokenizer = load_model(args.model, name)
        print(f"kvsharer: model loaded in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    else:
        model, tokenizer = loaded
        previous = model.config._attn_implementation
        model.set_attn_implementation(name)
    try:
        try:
            ids = torch.tensor(calibration_ids(tokenizer, args.texts, args.tokens, args.seed))
        except ValueError as e:
            print(f"kvsharer: {e}", file=sys.stderr)
            return EXIT_USAGE
        if state["ranking"] is None:
            from kvd.errors import KvdError
            kv = sharing.kv_of(model, ids)
            try:
                state["ranking"], state["kvd_model"] = rank_with_kvd(args, model, ids, kv)
            except (KvdError, RuntimeError) as e:
                print(f"kvsharer: error: {e}", file=sys.stderr)
                return EXIT_USAGE
            ckpt.save(cpath, settings, state)
            print(f"kvsharer: ranked {len(state['ranking'])} layer pairs; most dissimilar "
                  + ", ".join(f"{i}-{j} {d:.3f}" for i, j, d in state["ranking"][:5]),
                  file=sys.stderr)
        return greedy(args, model, ids, state, settings, cpath, out)
    finally:
        if previous is not None:
            model.set_attn_implementation(previous)


def greedy(args, model, ids, state, settings, cpath, out) -> int:
    from kvd_transformers.calibrate import sharing
    from kvd_transformers.calibrate.progress import Progress

    ranking = state["ranking"]
    aliases = {int(k): int(v) for k, v in state["aliases"].items()}
    full = sharing.last_hidden(model, ids, {})
    bar = Progress(len(ranking), "kvsharer check", done=state["next"])
    checked = 0
    try:
        while state["next"] < len(ranking) and len(aliases) < args.shares:
            if args.stop_after and checked >= args.stop_after:
                bar.close()
                ckpt.save(cpath, settings, state)
                print(f"kvsharer: stopped after {checked} checks; checkpoint {cpath}; rerun with "
                      "--resume", file=sys.stderr)
                return EXIT_STOPPED
            i, j, d = ranking[state["next"]]
            if i not in aliases:
                cand = sharing.resolve({**aliases, i: j})
                sim = sharing.similarity(full, sharing.last_hidden(model, ids, cand))
                ok = sim >= args.threshold
                if ok:
                    aliases = cand
                state["tried"].append([i, j, round(d, 6), round(sim, 6), ok])
                checked += 1
                state["aliases"] = {str(k): v for k, v in aliases.items()}
            state["next"] += 1
            ckpt.save(cpath, settings, state)
            bar.step(f"accepted {len(aliases)}/{args.shares}", n=1)
        bar.done = bar.total
        bar.close()
    except KeyboardInterrupt:
        bar.close()
        ckpt.save(cpath, settings, state)
        print(f"\nkvsharer: interrupted at pair {state['next']}; checkpoint {cpath}; rerun the "
              "same command with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED

    if not aliases:
        ckpt.remove(cpath)
        print(f"kvsharer: error: no layer pair kept the hidden-state similarity >= "
              f"{args.threshold}; no map written to {out}", file=sys.stderr)
        return EXIT_NONE
    final = sharing.resolve(aliases)
    sim = sharing.similarity(full, sharing.last_hidden(model, ids, final))
    alias_map = format_map(final)
    accepted = [t for t in state["tried"] if t[4]]
    header = [
        f"# KVSharer layer aliases (layer:owner; each owner an earlier layer) for "
        f"{args.model or 'SmolLM2-135M-Instruct (bundled GGUF)'}",
        f"# made by: python -m kvd_transformers.calibrate.kvsharer --texts {args.texts} "
        f"--tokens {args.tokens} --seed {args.seed} --threshold {args.threshold} "
        f"--shares {args.shares} (kvd model {state.get('kvd_model') or '?'})",
        "# calibration text: pydoc_data.topics; ranking: kvd RankLayers, most dissimilar first",
        "# accepted (layer -> owner, distance, cosine of last hidden states): "
        + "; ".join(f"{i}->{j} d={d:.3f} cos={s:.4f}" for i, j, d, s, _ in accepted),
        f"# {len(state['tried'])} pairs checked; cosine with the whole map: {sim:.4f}",
        "# use: {sharer: kvsharer, params: {alias_map: \"<the line below>\"}}",
    ]
    ckpt.write_text_atomic(out, "\n".join(header) + "\n" + alias_map + "\n")
    ckpt.remove(cpath)
    print(f"kvsharer: {len(final)} layers shared after {len(state['tried'])} checks; cosine "
          f"{sim:.4f}; wrote {out}")
    print(f"kvsharer: alias_map {alias_map}")
    print(policy_snippet(alias_map, "shared"))
    return EXIT_OK


def main(argv=None, loaded=None) -> int:
    """CLI entry; ``loaded`` = (model, tokenizer) reuses a loaded model (tests)."""
    return run(parse_args(argv), loaded)


if __name__ == "__main__":
    sys.exit(main())
