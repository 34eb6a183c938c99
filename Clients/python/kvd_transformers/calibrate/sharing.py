"""KVSharer's model-side check: a forward pass in which aliased layers attend with an earlier
layer's keys and values computed in the same pass (compared with the full model in :mod:`kl`: by
next-token KL, or the paper's cosine of the last hidden states).

The attention function (registered through transformers' AttentionInterface) records every
layer's K/V of the current forward and, for a layer in the active alias map, substitutes the
owner's — what kvd's KvdCache does with an aliased layer (it reads the owner's tokens, old and new).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

ATTN_NAME = "kvd_calib_share"


class ShareState:
    """The alias map in force and the K/V each layer computed in the current pass; ``kv`` may be
    seeded with earlier layers' K/V when a pass starts above them (:mod:`kl`)."""

    def __init__(self, aliases: dict[int, int], kv=None):
        self.aliases = dict(aliases)
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = dict(kv or {})


_active: ShareState | None = None


def sharing_attention(module, query, key, value, attention_mask=None, scaling=None,
                      dropout: float = 0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    st = _active
    if st is not None:
        layer = module.layer_idx
        st.kv[layer] = (key, value)
        owner = st.aliases.get(layer)
        if owner is not None:
            if owner not in st.kv:
                raise RuntimeError(f"kvsharer: layer {layer} aliases layer {owner}, which has not "
                                   "run yet in this forward pass (owners must be earlier layers)")
            key, value = st.kv[owner]
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                  dropout=dropout, **kwargs)


def register() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, sharing_attention)
    return ATTN_NAME


def resolve(aliases: dict[int, int]) -> dict[int, int]:
    """Chains resolved (3→2, 2→1 becomes 3→1, 2→1); every owner earlier than its layer."""
    out = {}
    for layer, owner in aliases.items():
        seen = {layer}
        while owner in aliases:
            if owner in seen:
                raise ValueError(f"kvsharer: alias cycle through layer {owner}")
            seen.add(owner)
            owner = aliases[owner]
        if owner >= layer:
            raise ValueError(f"kvsharer: layer {layer} would alias later layer {owner}")
        out[layer] = owner
    return out


@contextmanager
def active(aliases: dict[int, int], kv=None):
    """Forwards inside the block run with ``aliases`` in force (one forward pass at a time: the
    recorded K/V are those of the latest pass). Yields the :class:`ShareState`."""
    global _active
    _active = ShareState(aliases, kv)
    try:
        yield _active
    finally:
        _active = None


def kv_of(model, ids: torch.Tensor, batch: int = 8):
    """Post-RoPE keys and values of every text: a list of ``(K, V)`` ``[layers, kv_heads, tokens,
    head_dim]`` float32 arrays, as a runtime would append them to kvd."""
    from transformers import DynamicCache

    res = []
    with torch.no_grad():
        for s in range(0, ids.shape[0], batch):
            cache = DynamicCache(config=model.config)
            model(ids[s:s + batch], cache=cache, use_cache=True)
            k = torch.stack([layer.keys for layer in cache.layers], dim=1)    # [B, L, H, T, D]
            v = torch.stack([layer.values for layer in cache.layers], dim=1)
            for b in range(k.shape[0]):
                res.append((k[b].float().numpy(), v[b].float().numpy()))
    return res
