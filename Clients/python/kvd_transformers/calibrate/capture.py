"""HeadKV-R2 scoring inside the model's attention: an attention function (registered through
transformers' AttentionInterface) that, while a :class:`NeedleRecorder` is active, scores every
decoding step (one new token) of every query head.

Per step and query head with attention a over all cached positions: take the top-N positions
(N = needle length in tokens) and add a[p] / N for each p inside the needle span. Multi-token
calls (the prefill) are plain SDPA attention and are not scored. Each step's scores are kept apart
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


def scoring_attention(module, query, key, value, attention_mask=None, scaling=None,
                      dropout: float = 0.0, **kwargs):
    """transformers attention function: SDPA for multi-token calls; eager with scoring for one
    new token while a recorder is active. Returns ``([B, T, q_heads, D], None)``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rec = _active
    b, hq, t, d = query.shape
    if rec is None or t != 1 or b != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    hkv, s = key.shape[1], key.shape[2]
    g = hq // hkv
    scaling = d ** -0.5 if scaling is None else scaling
    # Query head j*g + i uses KV head j (transformers' repeat_kv order). One new token at the end
    # of a batch-1 cache sees every position, so no mask is needed.
    logits = torch.matmul(query.reshape(b, hkv, g, d), key.transpose(-1, -2)) * scaling
    probs = torch.softmax(logits.float(), dim=-1)                       # [1, hkv, g, S]
    rec.add(module.layer_idx, probs.reshape(hq, s))
    out = torch.matmul(probs.to(value.dtype), value)                    # [1, hkv, g, D]
    return out.reshape(b, hq, 1, d).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the scoring attention function (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, scoring_attention)
    return ATTN_NAME
