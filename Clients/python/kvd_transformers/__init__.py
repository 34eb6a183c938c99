"""kvd for Hugging Face ``transformers``: a ``Cache`` backed by a kvd sequence and the attention
function that reads it (per-head lengths after compaction, BalanceKV log-weights, KVSharer aliases).

    from kvd import Client
    from kvd_transformers import KvdCache, load_smollm2

    model, tok = load_smollm2()          # attn_implementation="kvd"
    client = Client("ipc:///tmp/kvd-default.sock")
    cache = KvdCache(client, "smollm2-135m-f32", method="snapkv", params={"budget": 64},
                     config=model.config)
    out = model.generate(input_ids, past_key_values=cache, max_new_tokens=16, do_sample=False)
    cache.release()

    # Prefix reuse: index this sequence's pages and start from the longest cached prefix.
    cache = KvdCache(client, "smollm2-135m-f32", model=model, reuse_prefix=True,
                     prompt_ids=input_ids)
    out = model.generate(input_ids, past_key_values=cache, ...)   # prefills only the rest

Needs the ``model`` extra: torch, transformers, gguf, accelerate.
"""

from kvd_transformers.attention import ATTN_NAME, kvd_attention, register_attention
from kvd_transformers.cache import KvdCache, KvdLayer
from kvd_transformers.layout import check_layout, model_layout_of
from kvd_transformers.model import load_smollm2, smollm2_gguf

__all__ = ["ATTN_NAME", "KvdCache", "KvdLayer", "check_layout", "kvd_attention", "load_smollm2",
           "model_layout_of", "register_attention", "smollm2_gguf"]
