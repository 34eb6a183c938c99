"""The ``"kvd"`` attention function for transformers' AttentionInterface.

A :class:`~kvd_transformers.cache.KvdCache` returns, per layer, its persistent buffer: the retained
kvd tokens of every KV head padded to the longest head of the layer, followed by the new tokens.
Attention is then, per KV head h and each query head g of its group (g // (q_heads / kv_heads) == h):

    softmax(q_g · K_hᵀ · scaling + bias_h) · V_h

with bias = the token's kvd log-weight (BalanceKV), −inf on padding, 0 on the new tokens, a
causal mask inside the new tokens and, on a sliding-window layer (transformers passes
``sliding_window``: Gemma 3), −inf on keys ``sliding_window`` or more positions behind the query
(:mod:`kvd_transformers.window`, by each token's recorded position). ``scaling`` is the model's
(Gemma 3: ``query_pre_attn_scalar ** -0.5``). Everything goes through
``torch.nn.functional.scaled_dot_product_attention`` with ``enable_gqa``: with no padding and no
log-weights (a full cache) there is no mask at all — the same kernel as transformers' ``sdpa`` path —
else a float mask built from the bias.

The cache hands the layer's :class:`LayerContext` to this function as the ``kvd_layer`` keyword:
transformers' attention modules call ``cache.update(..., kwargs=kwargs)`` with the very dict they
then unpack into the attention function, and the cache adds the context to it. A context on the
key tensor (``key._kvd_ctx``, what older callers set) is still read. Without one (another cache,
or none) the function is plain causal attention whose last ``q_len`` keys are the new tokens.
It also feeds the post-RoPE queries back to the cache (window queries for Compact).
"""

from __future__ import annotations

from typing import Optional

import torch

from kvd_transformers.window import dead_keys, positions_for_heads

ATTN_NAME = "kvd"
CTX_KWARG = "kvd_layer"


class LayerContext:
    """What a KvdCache tells the attention function about one layer's returned K/V.

    ``bias``: ``[kv_heads, ≥ prefix]`` float (log-weights, −inf on padding); only its first
    ``prefix = keys − new tokens`` columns are read (the new tokens have no bias). ``plain``: the
    cache knows the prefix bias is all zeros (no padding, no log-weights), so no mask is needed;
    ``None``: look at ``bias``. ``cache``: gets ``_record_queries`` / ``_attention_done`` calls
    (anything with those two methods). ``pos``: ``[kv_heads, ≥ keys]`` each key column's token
    position and ``q_start`` the first new token's, for sliding-window layers (None: the keys are
    taken to be consecutive positions ending at the last query). ``window``: set by the attention
    function to the ``sliding_window`` it was called with (0 = full attention)."""

    __slots__ = ("cache", "layer", "bias", "plain", "pos", "q_start", "window")

    def __init__(self, cache, layer: int, bias: Optional[torch.Tensor], plain: Optional[bool] = None,
                 pos: Optional[torch.Tensor] = None, q_start: int = 0):
        self.cache = cache
        self.layer = layer
        self.bias = bias
        self.plain = plain
        self.pos = pos
        self.q_start = q_start
        self.window = None

    # Older callers name the bias this way.
    @property
    def prefix_bias(self) -> Optional[torch.Tensor]:
        return self.bias


def _mask(bias: Optional[torch.Tensor], prefix: int, t: int, dtype, device) -> torch.Tensor:
    """``[kv_heads or 1, t, prefix + t]``: the prefix bias for every query row, then the causal
    mask over the new tokens (0 on and below the diagonal, −inf above)."""
    heads = 1 if bias is None else bias.shape[0]
    m = torch.empty((heads, t, prefix + t), dtype=dtype, device=device)
    if bias is None:
        m[:, :, :prefix] = 0
    else:
        m[:, :, :prefix] = bias[:, None, :prefix].to(dtype=dtype, device=device)
    m[:, :, prefix:] = torch.full((t, t), float("-inf"), dtype=dtype, device=device).triu_(1)
    return m


def _window_dead(ctx, window: int, s: int, t: int) -> Optional[torch.Tensor]:
    """``[1 or kv_heads, t, s]`` keys out of the sliding window (None: none, or no window)."""
    if not window:
        return None
    if ctx is not None and ctx.pos is not None:
        if ctx.pos.shape[-1] < s:
            raise ValueError(f"kvd attention: positions of {ctx.pos.shape[-1]} keys for {s} keys")
        return dead_keys(positions_for_heads(ctx.pos[:, :s]), ctx.q_start, t, window)
    # No positions: consecutive keys, the last t of them the queries'.
    return dead_keys(torch.arange(s)[None], s - t, t, window)


def kvd_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask=None, scaling=None, dropout: float = 0.0, sliding_window=None,
                  **kwargs):
    """Attention over a KvdCache layer; signature of transformers' attention functions.

    ``query`` [B, q_heads, T, D], ``key``/``value`` [B, kv_heads, S, D]; returns
    ``([B, T, q_heads, D], None)``. ``attention_mask`` is ignored (batch size 1, no padding: the
    cache's bias, the causal mask and the sliding window are the whole mask).
    """
    if getattr(getattr(module, "config", None), "attn_logit_softcapping", None):
        raise ValueError("kvd attention: the model soft-caps attention logits "
                         "(attn_logit_softcapping), which the kvd attention function does not do")
    b, hq, t, d = query.shape
    hkv, s = key.shape[1], key.shape[2]
    if hq % hkv:
        raise ValueError(f"kvd attention: {hq} query heads are not a multiple of {hkv} KV heads")
    g = hq // hkv
    prefix = s - t
    if prefix < 0:
        raise ValueError(f"kvd attention: {s} keys for {t} new tokens")
    if scaling is None:
        scaling = d ** -0.5
    ctx = kwargs.get(CTX_KWARG) or getattr(key, "_kvd_ctx", None)
    bias = None
    if ctx is not None:
        ctx.cache._record_queries(ctx.layer, query)
        if ctx.bias is not None and ctx.bias.shape[-1] < prefix:
            raise ValueError(f"kvd attention: a bias of {ctx.bias.shape[-1]} tokens for a prefix "
                             f"of {prefix}")
        plain = ctx.plain
        if plain is None:
            plain = ctx.bias is None or not bool(ctx.bias[:, :prefix].any())
        bias = None if plain else ctx.bias
    window = int(sliding_window or 0)
    if ctx is not None:
        ctx.window = window
    dead = _window_dead(ctx, window, s, t)
    p = dropout if (dropout and module is not None and module.training) else 0.0
    sdpa = torch.nn.functional.scaled_dot_product_attention

    if dead is not None:
        # Keys out of the sliding window: one float mask (bias, causal, window) per KV head, or one
        # for all heads when they agree.
        mask = _mask(bias, prefix, t, query.dtype, query.device).masked_fill(dead, float("-inf"))
        if mask.shape[0] > 1:
            mask = mask.repeat_interleave(g, dim=0)
        out = sdpa(query, key, value, attn_mask=mask[None], dropout_p=p, scale=scaling,
                   enable_gqa=True)
    elif bias is None and (t == 1 or prefix == 0):
        # No padding, no log-weights: exactly transformers' sdpa call (no mask; causal when the
        # new tokens are all the keys).
        out = sdpa(query, key, value, dropout_p=p, is_causal=t > 1, scale=scaling, enable_gqa=True)
    elif bias is None:
        # A chunk after a plain prefix: one [T, S] mask for every head.
        mask = _mask(None, prefix, t, query.dtype, query.device)
        out = sdpa(query, key, value, attn_mask=mask[None], dropout_p=p, scale=scaling,
                   enable_gqa=True)
    elif t == 1:
        # Decode with a bias: the g query heads of KV head j (heads j*g .. j*g+g-1, transformers'
        # repeat_kv order) become g query rows of head j, so the [kv_heads, S] bias is the mask
        # as it is (a broadcast view, no copy per query head).
        if bias.shape[-1] >= s and bias.dtype == query.dtype and bias.device == query.device:
            m = bias[:, :s]  # the cache's own bias: 0 on the new token already
        else:
            m = torch.zeros((hkv, s), dtype=query.dtype, device=query.device)
            m[:, :prefix] = bias[:, :prefix]
        mask = m[None, :, None, :]
        out = sdpa(query.reshape(b, hkv, g, d), key, value, attn_mask=mask, dropout_p=p,
                   scale=scaling)
        out = out.reshape(b, hq, 1, d)
    else:
        # A chunk after a prefix with a bias: one mask per query head (head j*g + i uses KV head j).
        mask = _mask(bias, prefix, t, query.dtype, query.device).repeat_interleave(g, dim=0)
        out = sdpa(query, key, value, attn_mask=mask[None], dropout_p=p, scale=scaling,
                   enable_gqa=True)
    out = out.transpose(1, 2).contiguous()                              # [B, T, q_heads, D]
    if ctx is not None:
        ctx.cache._attention_done(ctx.layer)
    return out, None


def register_attention(name: str = ATTN_NAME) -> str:
    """Register :func:`kvd_attention` as ``name`` with transformers (idempotent); returns the name.
    Load models with ``attn_implementation=name`` or call ``model.set_attn_implementation(name)``."""
    from transformers import AttentionInterface

    AttentionInterface.register(name, kvd_attention)
    return name
