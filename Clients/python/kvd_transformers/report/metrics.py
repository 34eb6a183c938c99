"""The measurements on one restored (possibly compacted) cache."""

from __future__ import annotations

import numpy as np
import torch

NEW_TOKENS = 16


def greedy(model, cache, first_logits: torch.Tensor, max_new: int = NEW_TOKENS) -> list:
    """Greedy decoding after the prefill: the first token comes from the prefill's logits (before
    any compaction, as in ``generate``), the rest from forwards through ``cache``."""
    eos = model.config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    tok = int(first_logits.argmax())
    out = [tok]
    with torch.no_grad():
        while len(out) < max_new and tok not in eos:
            logits = model(input_ids=torch.tensor([[tok]]), cache=cache,
                           use_cache=True).logits
            tok = int(logits[0, -1].argmax())
            out.append(tok)
    return out


def teacher_forced_logprobs(model, cache, continuation: torch.Tensor) -> torch.Tensor:
    """log-softmax of the logits over ``continuation`` [1, T] fed in one forward: ``[T, vocab]``."""
    with torch.no_grad():
        logits = model(input_ids=continuation, cache=cache, use_cache=True).logits
    return torch.log_softmax(logits[0].double(), dim=-1)


def kl_per_position(ref_logp: torch.Tensor, logp: torch.Tensor) -> np.ndarray:
    """KL(full ‖ compressed) per position, nats."""
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).clamp_min(0).numpy()


def _attn(q: np.ndarray, k: np.ndarray, v: np.ndarray, lw: np.ndarray) -> np.ndarray:
    """``softmax(q·kᵀ/√d + lw)·v`` in float64 for q ``[m, d]`` (same formula as kvd.attention)."""
    logits = q @ k.T / np.sqrt(k.shape[-1]) + lw
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    return p @ v


def attention_errors(queries: list, full_k: np.ndarray, full_v: np.ndarray, kept,
                     layers: list | None = None) -> np.ndarray:
    """Relative attention-output error ‖o_kept − o_full‖ / ‖o_full‖ per (layer, query head, query).

    ``queries``: per layer ``[q_heads, m, D]``; ``full_k``/``full_v``: ``[L, H, n, D]`` (the
    uncompressed prefix); ``kept``: a kvd ``QueryResult`` of the compacted sequence (its kept K/V
    and log-weights; aliased layers return their owner's heads); ``layers``: which layers (default
    all; the grid passes the full-attention ones, since a sliding-window layer's reference would
    need the window and kvd never compacts it). Returns ``[len(layers), q_heads, m]``."""
    L, H = full_k.shape[:2]
    out = []
    for l in (range(L) if layers is None else layers):
        q = np.asarray(queries[l], dtype=np.float64)
        g = q.shape[0] // H
        per = []
        for h in range(H):
            hd = kept[l, h]
            kk = np.asarray(hd.keys, np.float64)
            kv = np.asarray(hd.values, np.float64)
            lw = np.asarray(hd.log_weights, np.float64)
            qs = q[h * g:(h + 1) * g].reshape(-1, q.shape[-1])
            o_f = _attn(qs, full_k[l, h].astype(np.float64), full_v[l, h].astype(np.float64), 0.0)
            o_c = _attn(qs, kk, kv, lw)
            err = np.linalg.norm(o_c - o_f, axis=-1) / np.maximum(np.linalg.norm(o_f, axis=-1), 1e-30)
            per.append(err.reshape(g, -1))
        out.append(np.concatenate(per))
    return np.stack(out)
