"""The ``"kvd"`` attention function for transformers' AttentionInterface.

A :class:`~kvd_transformers.cache.KvdCache` returns, per layer, the retained kvd tokens of every KV
head padded to the longest head of the layer, followed by the new tokens. Attention is then, per KV
head h and each query head g of its group (g // (q_heads / kv_heads) == h):

    softmax(q_g · K_hᵀ · scaling + bias_h) · V_h

with bias = the token's kvd log-weight (BalanceKV), −inf on padding, and a causal mask inside the
new tokens. The cache hands the bias over on the key tensor it returned (``key._kvd_ctx``); without
one (another cache, or none) the function is plain causal attention whose last ``q_len`` keys are
the new tokens. It also feeds the post-RoPE queries back to the cache (window queries for Compact).
"""

from __future__ import annotations

import torch

ATTN_NAME = "kvd"


class LayerContext:
    """What a KvdCache tells the attention function about one layer's returned K/V."""

    __slots__ = ("cache", "layer", "prefix_bias")

    def __init__(self, cache, layer: int, prefix_bias: torch.Tensor):
        self.cache = cache
        self.layer = layer
        self.prefix_bias = prefix_bias  # [kv_heads, prefix]: log-weights, -inf on padding


def attention_bias(prefix_bias: torch.Tensor, q_len: int, kv_heads: int, dtype, device) -> torch.Tensor:
    """``[kv_heads, q_len, prefix + q_len]``: the prefix bias for every query, then the causal mask
    over the new tokens."""
    prefix = prefix_bias.shape[-1]
    causal = torch.full((q_len, q_len), float("-inf"), dtype=dtype, device=device).triu_(1)
    bias = torch.empty((kv_heads, q_len, prefix + q_len), dtype=dtype, device=device)
    bias[:, :, :prefix] = prefix_bias.to(dtype=dtype, device=device)[:, None, :]
    bias[:, :, prefix:] = causal
    return bias


def kvd_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask=None, scaling=None, dropout: float = 0.0, **kwargs):
    """Attention over a KvdCache layer; signature of transformers' attention functions.

    ``query`` [B, q_heads, T, D], ``key``/``value`` [B, kv_heads, S, D]; returns
    ``([B, T, q_heads, D], None)``.
    """
    b, hq, t, d = query.shape
    hkv, s = key.shape[1], key.shape[2]
    if hq % hkv:
        raise ValueError(f"kvd attention: {hq} query heads are not a multiple of {hkv} KV heads")
    g = hq // hkv
    if scaling is None:
        scaling = d ** -0.5
    ctx = getattr(key, "_kvd_ctx", None)
    if ctx is not None:
        ctx.cache._record_queries(ctx.layer, query)
        prefix_bias = ctx.prefix_bias
    else:
        prefix_bias = torch.zeros((hkv, s - t), dtype=torch.float32, device=query.device)
    if prefix_bias.shape[-1] + t != s:
        raise ValueError(f"kvd attention: {s} keys for {t} new tokens after a prefix of "
                         f"{prefix_bias.shape[-1]}")

    if t > 1 and query.dtype == torch.float32 and not (dropout and module is not None and module.training):
        # A prefill (chunk): torch's fused attention never materialises the [q_heads, T, S]
        # logits, ~5x faster than the path below on a 1.5k-token prompt. The mask is the same
        # bias: one [T, S] for all heads when there are no log-weights or padding, else one per
        # query head (head j*g + i uses KV head j, as enable_gqa pairs them).
        bias = attention_bias(prefix_bias, t, hkv, torch.float32, query.device)
        bias = bias[:1] if not bool(prefix_bias.any()) else bias.repeat_interleave(g, dim=0)
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=bias[None], scale=scaling, enable_gqa=True)
        out = out.transpose(1, 2).contiguous()                         # [B, T, q_heads, D]
        if ctx is not None:
            ctx.cache._attention_done(ctx.layer)
        return out, None

    # Query head j*g + i uses KV head j (transformers' repeat_kv order).
    logits = torch.matmul(query.reshape(b, hkv, g * t, d), key.transpose(-1, -2)) * scaling
    logits = logits.view(b, hkv, g, t, s).float()
    logits = logits + attention_bias(prefix_bias, t, hkv, torch.float32, query.device)[None, :, None]
    probs = torch.softmax(logits, dim=-1).to(value.dtype)
    if dropout and module is not None and module.training:
        probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
    out = torch.matmul(probs.view(b, hkv, g * t, s), value)           # [B, kv, g*T, D]
    out = out.view(b, hq, t, d).transpose(1, 2).contiguous()          # [B, T, q_heads, D]
    if ctx is not None:
        ctx.cache._attention_done(ctx.layer)
    return out, None


def register_attention(name: str = ATTN_NAME) -> str:
    """Register :func:`kvd_attention` as ``name`` with transformers (idempotent); returns the name.
    Load models with ``attn_implementation=name`` or call ``model.set_attn_implementation(name)``."""
    from transformers import AttentionInterface

    AttentionInterface.register(name, kvd_attention)
    return name
