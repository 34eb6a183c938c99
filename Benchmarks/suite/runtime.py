"""Section 13: KvdCache at transformers speed. SmolLM2-135M-Instruct (f32, torch on CPU, 2 threads)
generates greedily from a prompt of Apache-2.0 license text (repeated when the prompt is longer
than the text), on a fresh daemon (Config/bench.yaml), in one run:

1. plain transformers: sdpa attention and its own DynamicCache (no kvd) — the baseline;
2. KvdCache, full cache, f32 layout (``smollm2-135m-f32``), kvd attention;
3. KvdCache, full cache, f16 layout (``smollm2-135m``);
4. at the long prompt: plain transformers again, and KvdCache (f32 layout) compressed after the
   prefill by StreamingLLM to a quarter of the prompt (4 sinks + recent).

Prefill tokens/s = prompt tokens ÷ (cache creation to the end of the first forward pass); decode
tokens/s = (new tokens − 1) ÷ (end of the first forward to the end of generate), so the
compaction after the prefill counts as decode time. Every configuration runs once per run, in the
order above, after a warm-up of each kind; ratios are against plain transformers at the same
prompt in the same run. Goals: full-cache prefill and decode ≥ 0.9× plain transformers; compressed
decode at the long prompt faster than plain transformers' full cache there.
"""
import time

from .prefix import load_model, missing  # the same model, loaded once per process
from .processes import Daemon
from .summary import fmt, goal_mark, spread

LICENSE = "/usr/share/common-licenses/Apache-2.0"
F32, F16 = "smollm2-135m-f32", "smollm2-135m"   # Config/bench.yaml
THREADS = 2
FULL_GOAL = 0.9


def prompt_ids(tok, tokens: int) -> list:
    text = tok(open(LICENSE).read()).input_ids
    return (text * (tokens // len(text) + 1))[:tokens]


def timed_generate(model, ids, attn: str, make_cache, new_tokens: int) -> dict:
    """Generate ``new_tokens`` greedy tokens; the clock starts before ``make_cache()`` (None: plain
    transformers' own DynamicCache)."""
    import torch
    ends = []
    hook = model.register_forward_hook(lambda *a: ends.append(time.perf_counter()))
    model.set_attn_implementation(attn)
    x = torch.tensor([ids])
    cache = None
    try:
        t0 = time.perf_counter()
        cache = make_cache() if make_cache else None
        with torch.no_grad():
            out = model.generate(x, attention_mask=torch.ones_like(x), cache=cache,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=model.config.eos_token_id)
        t1 = time.perf_counter()
    finally:
        hook.remove()
        model.set_attn_implementation("kvd")
        if cache is not None:
            cache.release()
    prefill = ends[0] - t0
    return {"prompt": len(ids), "new_tokens": new_tokens, "prefill_s": prefill, "decode_s": t1 - ends[0],
            "prefill_tps": len(ids) / prefill, "decode_tps": (new_tokens - 1) / (t1 - ends[0]),
            "tokens": out[0, len(ids):].tolist()}


def measure(prompt_tokens: int, long_tokens: int, new_tokens: int) -> list:
    """One run on a fresh daemon: a row per configuration (see the module docstring)."""
    gone = missing()
    if gone:
        return [{"skipped": f"needs {', '.join(gone)}"}]
    import torch
    from kvd import Client
    from kvd_transformers import KvdCache

    torch.set_num_threads(THREADS)
    model, tok = load_model()
    short, long = prompt_ids(tok, prompt_tokens), prompt_ids(tok, long_tokens)
    keep = max(16, long_tokens // 4)
    # zero_copy: the long prefill's Append (188 MB of f32 K/V) exceeds max_message_bytes inline.
    compressed = dict(method="streamingllm", params={"sinks": 4, "recent": keep - 4}, zero_copy=True)
    rows = []
    with Daemon("runtime") as d, Client(d.endpoints.ipc, timeout_ms=120000) as c:
        kvd = lambda name, **kw: (lambda: KvdCache(c, name, config=model.config, **kw))
        # Warm-up: torch's first calls and the client's first requests are not what is measured.
        timed_generate(model, short[:32], "sdpa", None, 2)
        timed_generate(model, short[:32], "kvd", kvd(F32), 2)
        runs = [("transformers (sdpa, DynamicCache)", short, "sdpa", None),
                ("KvdCache full, f32 layout", short, "kvd", kvd(F32)),
                ("KvdCache full, f16 layout", short, "kvd", kvd(F16)),
                ("transformers (sdpa, DynamicCache)", long, "sdpa", None),
                (f"KvdCache StreamingLLM to {keep} tokens, f32 layout", long, "kvd", kvd(F32, **compressed))]
        for label, ids, attn, make in runs:
            rows.append(dict(timed_generate(model, ids, attn, make, new_tokens), config=label))
    for r in rows:
        base = next(b for b in rows if b["prompt"] == r["prompt"] and b["config"].startswith("transformers"))
        r["prefill_ratio"] = r["prefill_tps"] / base["prefill_tps"]
        r["decode_ratio"] = r["decode_tps"] / base["decode_tps"]
        r["identical"] = r["tokens"] == base["tokens"]
    return rows


def table(runs: list) -> list:
    rows = [r for rs in runs for r in rs]
    title = "### 13. KvdCache at transformers speed (SmolLM2-135M-Instruct f32, torch CPU, 2 threads)"
    if not rows or any("skipped" in r for r in rows):
        why = next((r["skipped"] for r in rows if "skipped" in r), "no runs")
        return [title, "", f"Skipped: {why}."]
    lines = [title + f"; {rows[0]['new_tokens']} greedy tokens; ratios against plain transformers at the same "
             "prompt in the same run", "",
             "| configuration | prompt tokens | prefill tokens/s | decode tokens/s | prefill ratio | decode ratio | "
             "greedy tokens = transformers | goal |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    keys = []
    for r in rows:
        if (r["config"], r["prompt"]) not in keys:
            keys.append((r["config"], r["prompt"]))
    for config, prompt in keys:
        rs = [r for r in rows if r["config"] == config and r["prompt"] == prompt]
        pre, dec = spread([r["prefill_ratio"] for r in rs]), spread([r["decode_ratio"] for r in rs])
        if config.startswith("transformers"):
            goal = "baseline"
        elif "full" in config:
            goal = (f"prefill ≥ {FULL_GOAL}× {goal_mark(pre['median'] >= FULL_GOAL)}, "
                    f"decode ≥ {FULL_GOAL}× {goal_mark(dec['median'] >= FULL_GOAL)}")
        else:
            goal = f"decode > 1× {goal_mark(dec['median'] > 1)}"
        same = "n/a (compressed)" if "full" not in config and not config.startswith("transformers") else \
            ("yes" if all(r["identical"] for r in rs) else "**no**")
        lines.append(f"| {config} | {prompt} | {fmt(spread([r['prefill_tps'] for r in rs]), 0)} | "
                     f"{fmt(spread([r['decode_tps'] for r in rs]), 1)} | {fmt(pre)}× | {fmt(dec)}× | {same} | {goal} |")
    return lines
