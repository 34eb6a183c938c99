"""Per-layer torch buffers mirroring one layer of a kvd sequence (what a KvdCache attends over).

A :class:`LayerBuffer` holds ``k``/``v`` ``[1, kv_heads, capacity, head_dim]`` in the model's dtype
and ``bias`` ``[kv_heads, capacity]`` float32; its first ``n`` columns are the layer's retained
tokens (every head padded to the longest head: −inf bias on the padding, the kvd log-weight on a
token) followed by the tokens written since. ``pos`` ``[kv_heads, capacity]`` int64 is each
column's token position (the sliding-window mask reads it; padding gets ``PAD_POS``, never out of a
window). Capacity grows geometrically, so a decode step costs O(new tokens) (an occasional doubling
is amortised) and the attention reads views, never copies. On a sliding-window layer
:meth:`LayerBuffer.trim` drops the leading columns no later query can see, so the buffer stays
about the window long.
"""

from __future__ import annotations

import numpy as np
import torch

from kvd import paging
from kvd.views import PagedHead

MIN_CAPACITY = 256
PAD_POS = 2 ** 62  # position of padding columns: behind no query's window


class LayerBuffer:
    """One layer's retained tokens; see the module docstring."""

    __slots__ = ("k", "v", "bias", "pos", "n", "plain")

    def __init__(self, kv_heads: int, head_dim: int, dtype, device):
        self.k = torch.empty((1, kv_heads, 0, head_dim), dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.bias = torch.empty((kv_heads, 0), dtype=torch.float32, device=device)
        self.pos = torch.empty((kv_heads, 0), dtype=torch.int64, device=device)
        self.n = 0
        # No padding and every log-weight 0: attention needs no mask.
        self.plain = True

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def _reserve(self, n: int) -> None:
        cap = self.capacity
        if n <= cap:
            return
        new_cap = max(n, 2 * cap, MIN_CAPACITY)
        k = self.k.new_empty(self.k.shape[:2] + (new_cap, self.k.shape[3]))
        v = self.v.new_empty(k.shape)
        bias = self.bias.new_empty((self.bias.shape[0], new_cap))
        pos = self.pos.new_empty((self.pos.shape[0], new_cap))
        k[:, :, :self.n] = self.k[:, :, :self.n]
        v[:, :, :self.n] = self.v[:, :, :self.n]
        bias[:, :self.n] = self.bias[:, :self.n]
        pos[:, :self.n] = self.pos[:, :self.n]
        self.k, self.v, self.bias, self.pos = k, v, bias, pos

    def load(self, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
             pos: torch.Tensor = None) -> None:
        """Replace the contents: ``k``/``v`` ``[1, H, P, D]`` (any dtype), ``bias`` and ``pos``
        ``[H, P]`` (``pos`` None: positions 0..P-1)."""
        p = k.shape[2]
        self.n = 0
        self._reserve(p)
        self.k[:, :, :p] = k
        self.v[:, :, :p] = v
        self.bias[:, :p] = bias
        self.pos[:, :p] = torch.arange(p) if pos is None else pos
        self.n = p
        self.plain = not bool(bias.any()) if p else True

    def write(self, k: torch.Tensor, v: torch.Tensor, start: int = 0) -> None:
        """Add ``t`` new tokens (``[1, H, t, D]``, bias 0, positions ``start``…) after the ``n``
        held."""
        t = k.shape[2]
        self._reserve(self.n + t)
        end = self.n + t
        self.k[:, :, self.n:end] = k
        self.v[:, :, self.n:end] = v
        self.bias[:, self.n:end] = 0
        self.pos[:, self.n:end] = torch.arange(start, start + t)
        self.n = end

    def trim(self, first_visible: int) -> int:
        """Drop the leading columns in which no head holds a token at a position ≥
        ``first_visible`` (padding counts as nothing held); returns how many were dropped. The rest
        moves to the front (one copy of what stays: call it once the dead part is worth it)."""
        if self.n == 0:
            return 0
        held = (self.pos[:, :self.n] >= first_visible) & (self.bias[:, :self.n] > float("-inf"))
        alive = held.any(dim=0)
        drop = int(alive.int().argmax()) if bool(alive.any()) else self.n
        if drop == 0:
            return 0
        keep = self.n - drop
        for a in (self.k, self.v):
            a[:, :, :keep] = a[:, :, drop:self.n].clone()
        for a in (self.bias, self.pos):
            a[:, :keep] = a[:, drop:self.n].clone()
        self.n = keep
        self.plain = not bool(self.bias[:, :keep].any()) if keep else True
        return drop

    def keys(self) -> torch.Tensor:
        return self.k[:, :, :self.n]

    def values(self) -> torch.Tensor:
        return self.v[:, :, :self.n]


def read_layer(query, layer: int, kv_heads: int, head_dim: int):
    """One layer of a Query result as numpy ``(k [H, P, D], v [H, P, D], bias [H, P] float32,
    pos [H, P] int64)``, heads padded to the longest (zeros, bias −inf, position ``PAD_POS``).
    Heads of equal length in PAGES mode are read with one batched copy each for K and V."""
    heads = [query[layer, h] for h in range(kv_heads)]
    counts = [hd.num_tokens for hd in heads]
    p = max(counts)
    bias = np.full((kv_heads, p), -np.inf, dtype=np.float32)
    pos = np.full((kv_heads, p), PAD_POS, dtype=np.int64)
    for i, hd in enumerate(heads):
        bias[i, :counts[i]] = hd.log_weights
        pos[i, :counts[i]] = hd.positions
    paged = [hd._kp for hd in heads]
    if p and len(set(counts)) == 1 and all(isinstance(x, PagedHead) for x in paged):
        ids = np.stack([x.page_ids for x in paged])
        first = paged[0]
        read = lambda values: paging.read_tokens(first.arena.pages, ids, p, head_dim, first.dtype,
                                                 first.page_tokens, values)
        return read(False), read(True), bias, pos
    dtype = query.dtype
    k = np.zeros((kv_heads, p, head_dim), dtype=dtype)
    v = np.zeros((kv_heads, p, head_dim), dtype=dtype)
    for i, hd in enumerate(heads):
        if counts[i]:
            k[i, :counts[i]] = hd.keys
            v[i, :counts[i]] = hd.values
    return k, v, bias, pos


def to_torch(a: np.ndarray) -> torch.Tensor:
    """A numpy array (float16/float32/bfloat16) as a torch tensor sharing its memory."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)
