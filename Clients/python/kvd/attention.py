"""Reference attention over a kvd head, honouring log-weights — how a runtime uses what kvd returns.

Methods such as BalanceKV keep a subset of tokens and give each a log-weight: the log of how many
tokens it stands for. Attention over the compressed cache must add it to the token's logit:

    out = softmax(q · Kᵀ / √d + log_weights) · V

Plain eviction (log-weights all 0) is the special case. Shapes: ``q`` is ``[..., head_dim]`` (any
number of query vectors, e.g. the query heads sharing this KV head), ``K``/``V`` ``[n, head_dim]``,
``log_weights`` ``[n]``. Computed in float64 for use as a reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kvd.views import HeadData


def attention(q: np.ndarray, head: "HeadData") -> np.ndarray:
    """Attention of ``q`` over one head of a ``Client.query`` result (a ``HeadData``)."""
    keys, values = head.keys, head.values
    if keys is None or values is None:
        raise ValueError("attention needs K/V; this head came from a METADATA query")
    return attention_arrays(q, keys, values, head.log_weights)


def attention_arrays(q: np.ndarray, keys: np.ndarray, values: np.ndarray,
                     log_weights: np.ndarray | None = None) -> np.ndarray:
    """``softmax(q · keysᵀ / √d + log_weights) · values`` in float64."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(keys, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    logits = q @ k.T / np.sqrt(k.shape[-1])
    if log_weights is not None:
        logits = logits + np.asarray(log_weights, dtype=np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v
