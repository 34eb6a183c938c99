"""One uncompressed prefill per prompt, replayed into a fresh kvd sequence for every method.

The prefill does not depend on the method (compaction runs after it), so the report runs the model
once per prompt through a full :class:`KvdCache`, keeps the K/V kvd stored, the captured window
queries and the last logits, and for each method appends those K/V to a new sequence, compacts
with the same queries and continues decoding. That is exactly the state a ``KvdCache`` with
``compact_after_prefill`` reaches, without recomputing the prefill ~40 times per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kvd_transformers.cache import KvdCache

APPEND_CHUNK = 1024


class ReportCache(KvdCache):
    """A KvdCache that also keeps the post-RoPE queries of the forward after the prefill (the
    held-out queries for the attention-output error)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.heldout = [None] * self.num_layers

    def _record_queries(self, layer_idx: int, query: torch.Tensor) -> None:
        super()._record_queries(layer_idx, query)
        if not self._prefilling and self.heldout[layer_idx] is None:
            self.heldout[layer_idx] = query[0].detach().to(torch.float32).cpu().numpy()


@dataclass
class Prefill:
    ids: torch.Tensor          # [1, n] prompt
    keys: np.ndarray           # [L, H, n, D] float32, as kvd stored them (post-RoPE)
    values: np.ndarray
    queries: list              # per layer [q_heads, w, D] float32 tensors (last w prompt queries)
    last_logits: torch.Tensor  # [vocab] at the last prompt position
    full_layers: list          # layers kvd holds whole; a sliding-window layer (Gemma 3) has freed
                               # its out-of-window pages, and those positions are zeros in keys/values

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])


def run_prefill(model, client, model_name: str, ids: torch.Tensor, window: int) -> Prefill:
    cache = KvdCache(client, model_name, config=model.config, window=window, zero_copy=True)
    try:
        with torch.no_grad():
            # Only the last position's logits: all of them are [n, vocab] floats (0.8 GB for
            # SmolLM2 at 4096 tokens), which is what pushed 4096-token runs out of memory.
            out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        q = client.query(cache.sequence_id, copy=True)
        L, H, n = cache.num_layers, cache.kv_heads, int(ids.shape[1])
        D = int(np.asarray(q[0, 0].keys).shape[-1])
        keys = np.zeros((L, H, n, D), np.float32)
        values = np.zeros_like(keys)
        full_layers = []
        for l in range(L):
            whole = True
            for h in range(H):
                # By position: a sliding layer's head holds only its window's pages. Replaying
                # zeros there is harmless: kvd frees them again on append, and a kept page's
                # out-of-window tokens are masked by position in every later attention.
                pos = np.asarray(q[l, h].positions, np.int64)
                keys[l, h, pos] = q[l, h].keys
                values[l, h, pos] = q[l, h].values
                whole = whole and len(pos) == n
            if whole:
                full_layers.append(l)
        queries = list(cache._queries)
        if any(x is None for x in queries):
            raise RuntimeError("prefill captured no window queries: is attn_implementation 'kvd'?")
        return Prefill(ids, keys, values, queries, out.logits[0, -1].detach().float(), full_layers)
    finally:
        cache.release()


def restore(model, client, model_name: str, pre: Prefill, window: int, method: str = "",
            policy: str = "", params: dict | None = None):
    """A ReportCache holding ``pre``'s prompt, compacted by ``method``/``policy`` (nothing when both
    are empty); returns ``(cache, CompactResponse or None)``. Release the cache."""
    cache = ReportCache(client, model_name, method=method, policy=policy, params=params or {},
                        window=window, compact_after_prefill=False, config=model.config,
                        zero_copy=True)
    try:
        n = pre.length
        for s in range(0, n, APPEND_CHUNK):
            client.append(cache.sequence_id, pre.keys[:, :, s:s + APPEND_CHUNK],
                          pre.values[:, :, s:s + APPEND_CHUNK], zero_copy=True)
        # The state KvdCache has after its own prefill forward (see kvd_transformers.cache).
        cache._length = n
        cache._forwards = 1
        cache._saw_kvd_attention = True
        cache._queries = list(pre.queries)
        resp = cache.compact() if (method or policy) else None
        return cache, resp
    except BaseException:
        cache.release()
        raise
