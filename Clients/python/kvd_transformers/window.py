"""Sliding-window attention over a KvdCache buffer: which keys a query may no longer see.

A sliding layer of window ``W`` (Gemma 3: 512) lets the query at position ``q`` attend to keys at
positions ``p`` with ``q − W < p ≤ q`` — transformers' ``sliding_window_overlay`` — so a key at
``p ≤ q − W`` is masked. A KvdCache buffer is not a contiguous run of positions (compaction keeps
a subset per head, kvd frees tokens that left a sliding layer's window, the cache trims its own
buffer), so the test uses each buffer column's recorded position, never its index.
"""

from __future__ import annotations

from typing import Optional

import torch


def dead_keys(key_pos: torch.Tensor, q_start: int, t: int, window: int) -> Optional[torch.Tensor]:
    """``[Hp, t, S]`` bool: True where query row ``i`` (position ``q_start + i``) may not see key
    column ``s`` (position ``key_pos[h, s]``) because it is ``window`` or more tokens behind; None
    when no key is. ``key_pos`` is ``[Hp, S]`` (Hp = 1 when every head has the same positions)."""
    if window <= 0 or key_pos.shape[-1] == 0:
        return None
    # The last query row sees the least: if even it sees the oldest key, none is dead.
    if int(key_pos.min()) > q_start + t - 1 - window:
        return None
    q_pos = torch.arange(q_start, q_start + t, dtype=key_pos.dtype, device=key_pos.device)
    dead = key_pos[:, None, :] <= (q_pos - window)[None, :, None]
    return dead if bool(dead.any()) else None


def positions_for_heads(pos: torch.Tensor) -> torch.Tensor:
    """``pos`` ``[H, S]`` as ``[1, S]`` when every head holds the same positions (a full or
    uniformly compacted layer: one mask row set serves all heads), else as it is."""
    if pos.shape[0] > 1 and bool((pos == pos[:1]).all()):
        return pos[:1]
    return pos
