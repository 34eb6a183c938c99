"""HeadKV-R2 scoring inside the model's attention: an attention function (registered through
transformers' AttentionInterface) that, while a :class:`NeedleRecorder` is active, scores every
decoding step (one new token) of every query head.

Per step and query head with attention a over all cached positions: take the top-N positions
(N = needle length in tokens) and add a[p] / N for each p inside the needle span. Multi-token
calls (the prefill) are plain SDPA attention and are not scored. Sliding-window layers (Gemma-3)
mask keys older than the window, as the model does. Each step's scores are kept apart
so that a question is scored over the steps that generated its answer only (:meth:`score`), as the
HeadKV code stops scoring at the answer's length.
"""

from __future__ import annotations

import torch

ATTN_NAME = "kvd_calib_headkv"


class NeedleRecorder:
    """Per-(layer, query head) scores of each decoding step of one question."""

    def __init__(self, layers: int, q_heads: int, start: int, end: int):
        self.start, self.end = int(start), int(end)
        self.n = self.end - self.start
        self.current = torch.zeros((layers, q_heads), dtype=torch.float64)
        self.steps: list[torch.Tensor] = []

    def add(self, layer: int, probs: torch.Tensor) -> None:
        """``probs``: [q_heads, S] attention of the current step's query."""
        k = min(self.n, probs.shape[-1])
        vals, idx = probs.topk(k, dim=-1)
        inside = (idx >= self.start) & (idx < self.end)
        self.current[layer] += (vals * inside).sum(-1).double() / self.n

    def end_step(self) -> None:
        """Close the current decoding step (every layer has added its attention)."""
        self.steps.append(self.current)
        self.current = torch.zeros_like(self.current)

    def score(self, steps) -> torch.Tensor:
        """The question's scores [layers, q_heads]: the sum over ``steps`` (indices of decoding
        steps) divided by their count A. The HeadKV-R2 code (retrieval_head_detection_r2.py)
        decodes at most A = the answer's token count steps and adds a/(N·A) per step, so this is its
        score (without its constant factor 10) over the A steps that generated the answer."""
        steps = list(steps)
        if not steps:
            return torch.zeros_like(self.current)
        return torch.stack([self.steps[i] for i in steps]).sum(0) / len(steps)


_active: NeedleRecorder | None = None


def set_recorder(rec: NeedleRecorder | None) -> None:
    global _active
    _active = rec


def step_probs(query, key, scaling: float, sliding_window=None) -> torch.Tensor:
    """Attention ``[q_heads, S]`` of one new query token (``query`` [1, q_heads, 1, D]) over a
    batch-1 cache (``key`` [1, kv_heads, S, D]) that holds every position 0..S-1, the query
    being position S-1. Query head j*g + i uses KV head j (transformers' repeat_kv order). With
    ``sliding_window`` W (a sliding-attention layer), keys at positions <= q - W are invisible
    (probability 0), as transformers' sliding-window mask makes them."""
    b, hq, _, d = query.shape
    hkv, s = key.shape[1], key.shape[2]
    g = hq // hkv
    logits = torch.matmul(query.reshape(b, hkv, g, d), key.transpose(-1, -2)).float() * scaling
    if sliding_window is not None and s > sliding_window:
        logits[..., :s - sliding_window] = float("-inf")   # positions p <= (s-1) - W
    return torch.softmax(logits, dim=-1).reshape(hq, s)


def scoring_attention(module, query, key, value, attention_mask=None, scaling=None,
                      dropout: float = 0.0, sliding_window=None, **kwargs):
    """transformers attention function: SDPA for multi-token calls; eager with scoring for one
    new token while a recorder is active. Returns ``([B, T, q_heads, D], None)``. ``scaling``
    comes from the model (Gemma-3: ``query_pre_attn_scalar ** -0.5``); ``sliding_window`` is
    passed by transformers for sliding-attention layers (Gemma-3) and masks old keys."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rec = _active
    b, hq, t, d = query.shape
    if rec is None or t != 1 or b != 1:
        if sliding_window is not None:
            kwargs["sliding_window"] = sliding_window
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    hkv, s = key.shape[1], key.shape[2]
    g = hq // hkv
    scaling = d ** -0.5 if scaling is None else scaling
    # The calibration decodes into a cache holding every position (no sliding-window layer
    # cache), so the new token is position S-1 and only the sliding window needs masking.
    probs = step_probs(query, key, scaling, sliding_window)
    rec.add(module.layer_idx, probs)
    out = torch.matmul(probs.reshape(b, hkv, g, s).to(value.dtype), value)   # [1, hkv, g, D]
    return out.reshape(b, hq, 1, d).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the scoring attention function (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, scoring_attention)
    # transformers builds no mask at all for an attention name it has no mask function for; the
    # prefill (plain SDPA) then lets sliding-window layers (Gemma-3) see every earlier token.
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    return ATTN_NAME
