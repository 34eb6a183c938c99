"""KVSharer layer alias map for kvd's ``kvsharer`` method / sharer.

    python -m kvd_transformers.calibrate.kvsharer --endpoint ipc:///tmp/kvd-default.sock \\
        --out Config/kvsharer/smollm2-135m-kl05.map

1. The model computes the K/V of the calibration texts (default 30 texts x 64 tokens from
   ``pydoc_data.topics``); each text goes to a new sequence of a kvd model with the same layout
   (``--kvd-model``, default: the first Hello lists with that layout).
2. kvd's RankLayers ranks the layer pairs (i > j) by the distance of their averaged caches, most
   dissimilar first; the sequences are then released.
3. Greedy, in that order (:mod:`greedy`): skip i if it is already shared; tentatively map i -> j
   (chains resolved); accept by ``--accept``. Only layers with the same attention window pair up
   (a sliding-window layer never reads a full layer's cache or the other way round: Gemma 3), so
   pairs of different windows are dropped from the ranking first; accept by ``--accept``:
   ``kl`` (default, kvd's extension): the mean next-token KL(full || shared) of the whole candidate
   map on the calibration texts <= ``--kl-budget`` nats (:mod:`kl`);
   ``cosine`` (the paper's): the cosine similarity of the last hidden states >= ``--threshold``.
   Stop after ``--shares`` accepted layers (0 = no cap) or ``--max-checks`` checks (0 = all pairs).

Writes "i:j,..." (with a comment header: settings, each accepted alias's KL alone and marginal
KL) to ``--out`` and prints a policy snippet. Exit codes: 0 written; 2 bad options / checkpoint /
kvd problem; 3 nothing accepted (no file); 75 stopped by ``--stop-after``; 130 interrupted
(checkpoint kept; rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kvd_transformers.calibrate import checkpoint as ckpt
from kvd_transformers.calibrate import greedy as greedy_walk

EXIT_OK, EXIT_USAGE, EXIT_NONE, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 2, 3, 75, 130


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.calibrate.kvsharer",
                                description="KVSharer alias map from kvd's RankLayers and the "
                                            "model's next-token KL (or the paper's hidden-state "
                                            "cosine).")
    p.add_argument("--endpoint", default="ipc:///tmp/kvd-default.sock",
                   help="a running kvd whose config has a model with this model's layout "
                        "(default ipc:///tmp/kvd-default.sock)")
    p.add_argument("--kvd-model", default="", help="kvd model name (default: the first with the "
                   "model's layout)")
    p.add_argument("--model", default="", help="smollm2-135m or gemma3-270m (kvd_transformers."
                   "models), a transformers model directory, a .gguf file or DIR:FILE.gguf "
                   "(default: SmolLM2-135M-Instruct)")
    p.add_argument("--out", required=True, help="output map file (\"i:j,...\" after # comments)")
    p.add_argument("--texts", type=int, default=30, help="calibration texts (default 30)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per text (default 64)")
    p.add_argument("--seed", type=int, default=0, help="which pydoc topics (default 0)")
    p.add_argument("--accept", choices=("kl", "cosine"), default="kl",
                   help="acceptance test: kl = the whole candidate map's mean next-token KL vs the "
                        "full model <= --kl-budget (kvd's extension, default); cosine = last "
                        "hidden states' cosine >= --threshold (the paper's)")
    p.add_argument("--kl-budget", type=float, default=0.05,
                   help="--accept kl: most mean KL(full || shared) in nats (default 0.05)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="--accept cosine: least cosine similarity of the last hidden states "
                        "(default 0.5)")
    p.add_argument("--shares", type=int, default=None,
                   help="stop after S shared layers; 0 = no cap (default: 0 with --accept kl, "
                        "4 with --accept cosine)")
    p.add_argument("--max-checks", type=int, default=0,
                   help="stop after K checked pairs in all and write the map (default 0 = every "
                        "pair)")
    p.add_argument("--checks-out", default="",
                   help="also write every check (pair, distance, KL, cosine, accepted) as JSON")
    p.add_argument("--timeout-ms", type=int, default=60000, help="kvd call timeout")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest on a shared machine; 0 = torch's "
                        "default)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt.json")
    p.add_argument("--stop-after", type=int, default=0,
                   help="check at most this many pairs in this run, then keep the checkpoint and "
                        "exit 75 (for time-sliced jobs and tests)")
    args = p.parse_args(argv)
    if args.shares is None:
        args.shares = 0 if args.accept == "kl" else 4
    if args.texts < 1 or args.tokens < 2 or args.shares < 0 or args.max_checks < 0:
        p.error("--texts >= 1, --tokens >= 2, --shares >= 0 and --max-checks >= 0")
    if not -1 <= args.threshold <= 1:
        p.error("--threshold is a cosine similarity in [-1, 1]")
    if not args.kl_budget >= 0:
        p.error("--kl-budget is a KL in nats, >= 0")
    return args


def read_map(path) -> str:
    """The alias map of a file this tool wrote: the first line that is not blank or a comment."""
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    return ""


def accepted_order(path) -> list[tuple[int, int]]:
    """The accepted aliases of a map file, in the order they were accepted (before chains resolve):
    its "# accepted in order" comment line; [] if the file has none (older files)."""
    tag = "# accepted in order"
    for line in Path(path).read_text().splitlines():
        if line.startswith(tag):
            pairs = line.rsplit("):", 1)[1]
            return [tuple(map(int, p.split(":"))) for p in pairs.strip().split(",") if p.strip()]
    return []


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


def same_window_pairs(ranking, windows: list[int]) -> list:
    """The ranked pairs ``[i, j, d]`` whose layers have the same attention window (``windows[l]``,
    0 = full): KVSharer may only alias those — a sliding layer's cache lacks what a full layer
    reads, and a full layer's would give a sliding layer tokens outside its window."""
    return [p for p in ranking if windows[int(p[0])] == windows[int(p[1])]]


def run_settings(args) -> dict:
    """What a checkpoint must match to be resumed (every option that changes the result)."""
    return {"tool": "kvsharer", "model": args.model or "smollm2", "texts": args.texts,
            "tokens": args.tokens, "seed": args.seed, "accept": args.accept,
            "kl_budget": args.kl_budget, "threshold": args.threshold, "shares": args.shares,
            "max_checks": args.max_checks}


# Settings that only say when to stop: the walk is deterministic, so a checkpoint that has not yet
# passed a new cap continues to exactly what a fresh run with that cap writes.
STOP_RULES = ("shares", "max_checks")


def check_stop_rules(args, state) -> None:
    """CheckpointError if the checkpoint already went past this run's --max-checks / --shares."""
    checks, shared = len(state["tried"]), len(state["aliases"])
    if args.max_checks and checks > args.max_checks:
        raise ckpt.CheckpointError(f"--resume: the checkpoint has {checks} checks, more than "
                                   f"--max-checks {args.max_checks}")
    if args.shares and shared > args.shares:
        raise ckpt.CheckpointError(f"--resume: the checkpoint has {shared} shared layers, more "
                                   f"than --shares {args.shares}")


def run(args, loaded=None) -> int:
    out = Path(args.out)
    cpath = ckpt.checkpoint_path(out)
    settings = run_settings(args)
    if args.resume:
        try:
            state = ckpt.load(cpath, settings, may_differ=STOP_RULES)
            check_stop_rules(args, state)
        except ckpt.CheckpointError as e:
            print(f"kvsharer: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"kvsharer: resuming at pair {state['next']} with {len(state['aliases'])} accepted "
              f"from {cpath}", file=sys.stderr)
    else:
        state = {"ranking": None, "kvd_model": "", **greedy_walk.new_state()}

    import torch

    from kvd_transformers.calibrate import kl, sharing
    from kvd_transformers.calibrate.modelload import load_model, set_threads
    from kvd_transformers.calibrate.texts import calibration_ids

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
        from kvd_transformers.layout import layer_windows_of
        windows = layer_windows_of(model.config)
        state["ranking"] = same_window_pairs(state["ranking"], windows)
        if len(set(windows)) > 1:
            print(f"kvsharer: {len(state['ranking'])} pairs of layers with the same window "
                  f"(windows {sorted(set(windows))})", file=sys.stderr)
        # Batches of 4 texts: a check that is over the KL budget stops after fewer texts.
        reference = kl.Reference(model, ids, batch=4)
        return walk_and_write(args, reference, state, settings, cpath, out)
    finally:
        if previous is not None:
            model.set_attn_implementation(previous)


def walk_and_write(args, reference, state, settings, cpath, out) -> int:
    from kvd_transformers.calibrate.progress import Progress

    ranking = state["ranking"]
    bar = Progress(len(ranking), "kvsharer check", done=state["next"])

    def save(st):
        ckpt.save(cpath, settings, st)
        bar.done = st["next"]
        last = st["tried"][-1] if st["tried"] else None
        note = f"accepted {len(st['aliases'])}"
        if last:
            note += f"; last {last['layer']}->{last['owner']} KL {last['kl']:.4f}"
        bar.step(note, n=0)

    try:
        how = greedy_walk.walk(ranking, state, reference.measure, mode=args.accept,
                               kl_budget=args.kl_budget, threshold=args.threshold,
                               shares=args.shares, max_checks=args.max_checks,
                               stop_after=args.stop_after, save=save)
    except KeyboardInterrupt:
        bar.close()
        ckpt.save(cpath, settings, state)
        print(f"\nkvsharer: interrupted at pair {state['next']}; checkpoint {cpath}; rerun the "
              "same command with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    if how == greedy_walk.STOPPED:
        ckpt.save(cpath, settings, state)
        print(f"kvsharer: stopped after {args.stop_after} checks; checkpoint {cpath}; rerun with "
              "--resume", file=sys.stderr)
        return EXIT_STOPPED

    if args.checks_out:
        ckpt.write_json_atomic(Path(args.checks_out), {"settings": settings,
                                                       "tried": state["tried"]})
    aliases = greedy_walk.aliases_of(state)
    tried = state["tried"]
    if not aliases:
        ckpt.remove(cpath)
        best = min(tried, key=lambda t: t["kl"]) if tried else None
        why = (f"mean KL <= {args.kl_budget} nats" if args.accept == "kl"
               else f"hidden-state cosine >= {args.threshold}")
        print(f"kvsharer: error: no layer pair met the acceptance test ({why}) in {len(tried)} "
              f"checks" + (f"; smallest KL {best['kl']:.4f} ({best['layer']}->{best['owner']})"
                           if best else "") + f"; no map written to {out}", file=sys.stderr)
        return EXIT_NONE
    whole = reference.measure(aliases)
    alias_map = format_map(aliases)
    ckpt.write_text_atomic(out, "\n".join(header_lines(args, state, whole)) + "\n" + alias_map
                           + "\n")
    ckpt.remove(cpath)
    print(f"kvsharer: {len(aliases)} layers shared after {len(tried)} checks; KL {whole.kl:.4f} "
          f"nats, cosine {whole.cosine:.4f}; wrote {out}")
    print(f"kvsharer: alias_map {alias_map}")
    print(policy_snippet(alias_map, "shared"))
    return EXIT_OK


def header_lines(args, state, whole) -> list[str]:
    """The map file's comment lines: how it was made and every accepted alias's numbers."""
    tried = state["tried"]
    accepted = [t for t in tried if t["accepted"]]
    test = (f"kl: mean next-token KL(full || shared) of the whole candidate map <= "
            f"{args.kl_budget} nats (kvd's extension)" if args.accept == "kl"
            else f"cosine: last-hidden-state cosine >= {args.threshold} (the paper's)")
    return [
        f"# KVSharer layer aliases (layer:owner; each owner an earlier layer) for "
        f"{args.model or 'SmolLM2-135M-Instruct (bundled GGUF)'}",
        f"# made by: python -m kvd_transformers.calibrate.kvsharer --accept {args.accept} "
        f"--kl-budget {args.kl_budget} --threshold {args.threshold} --texts {args.texts} "
        f"--tokens {args.tokens} --seed {args.seed} --shares {args.shares} "
        f"--max-checks {args.max_checks} (kvd model {state.get('kvd_model') or '?'})",
        "# calibration text: pydoc_data.topics; ranking: kvd RankLayers, most dissimilar first",
        f"# acceptance: {test}",
        "# accepted in order (layer:owner as checked, before chains resolve): "
        + ",".join(f"{t['layer']}:{t['owner']}" for t in accepted),
        "# per accepted alias (KL in nats on the calibration texts; alone = that alias by itself, "
        "marginal = added to the map before it):",
        *(f"#   {t['layer']}->{t['owner']} d={t['distance']:.3f} alone KL={t['alone_kl']:.4f} "
          f"marginal KL={t['marginal_kl']:+.4f} map KL={t['kl']:.4f} cos={t['cosine']:.4f}"
          for t in accepted),
        f"# {len(tried)} pairs checked of {len(state['ranking'])}; whole map: KL {whole.kl:.4f} "
        f"nats, cosine {whole.cosine:.4f}",
        "# use: {sharer: kvsharer, params: {alias_map: \"<the line below>\"}}",
    ]


def main(argv=None, loaded=None) -> int:
    """CLI entry; ``loaded`` = (model, tokenizer) reuses a loaded model (tests)."""
    return run(parse_args(argv), loaded)


if __name__ == "__main__":
    sys.exit(main())
