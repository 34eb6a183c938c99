"""kvd for Hugging Face ``transformers``: a ``Cache`` backed by a kvd sequence and the attention
function that reads it (per-head lengths after compaction, BalanceKV log-weights, KVSharer aliases).
Against a daemon on the bundled ``Config/kvd.yaml`` (model ``smollm2-135m``, f16):

    from kvd import Client
    from kvd_transformers import KvdCache, load_smollm2

    model, tok = load_smollm2()          # attn_implementation="kvd"
    client = Client("ipc:///tmp/kvd-default.sock")
    input_ids = tok("kvd keeps the KV cache of a language model in shared memory, so",
                    return_tensors="pt").input_ids
    cache = KvdCache(client, "smollm2-135m", method="snapkv", params={"budget": 64},
                     config=model.config)
    out = model.generate(input_ids, cache=cache, max_new_tokens=16, do_sample=False)
    print(tok.decode(out[0, input_ids.shape[1]:]))
    cache.release()

    # Let the daemon's rules (or the model's default policy) pick the compaction.
    with KvdCache(client, "smollm2-135m", compact_after_prefill="auto", config=model.config) as cache:
        out = model.generate(input_ids, cache=cache, max_new_tokens=16, do_sample=False)
        print(cache.compactions[0].policy or cache.compactions[0].method)

    # Prefix reuse: index this sequence's pages and start from the longest cached prefix.
    with KvdCache(client, "smollm2-135m", model=model, reuse_prefix=True,
                  prompt_ids=input_ids) as cache:
        out = model.generate(input_ids, cache=cache, max_new_tokens=16, do_sample=False)

Needs the ``model`` extra: torch, transformers, gguf, accelerate.

Gemma-3-270M (``load_gemma3``, the ``gemma`` extra; kvd model ``gemma3-270m``) works the same way:
its sliding-window layers are masked by token position, and :mod:`kvd_transformers.models` names
both models for the tools (``--model gemma3-270m``).
"""

from kvd_transformers.attention import ATTN_NAME, kvd_attention, register_attention
from kvd_transformers.cache import KvdCache, KvdLayer
from kvd_transformers.layout import check_layout, model_layout_of
from kvd_transformers.model import gemma3_gguf, load_gemma3, load_smollm2, smollm2_gguf

__all__ = ["ATTN_NAME", "KvdCache", "KvdLayer", "check_layout", "gemma3_gguf", "kvd_attention",
           "load_gemma3", "load_smollm2", "model_layout_of", "register_attention", "smollm2_gguf"]
