"""What one mixed-load client knows its sequences must hold (used by test_mixed_load.py).

A ``SeqModel`` mirrors one sequence: for each owning (layer, KV head) the K/V rows, original
positions and log-weights it must hold, the layer aliases, the logical length and the generation.
Appends update it from the data sent; compactions from the positions the daemon reports kept,
after checking that those are what the method must keep and that every kept token is the original
token at that position (so any byte moved wrongly, by a race or otherwise, shows up at the next
check). ``check_query`` and ``check_stats`` compare the daemon's answers with the model, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from conftest import assert_bits_equal, bits

LN2 = math.log(2.0)


class Head:
    __slots__ = ("k", "v", "pos", "lw")

    def __init__(self, d: int, dtype):
        self.k = np.empty((0, d), dtype)
        self.v = np.empty((0, d), dtype)
        self.pos = np.empty(0, np.int64)
        self.lw = np.empty(0, np.float32)

    def take(self, idx: np.ndarray, lw: np.ndarray | None = None) -> None:
        self.k, self.v, self.pos = self.k[idx], self.v[idx], self.pos[idx]
        self.lw = self.lw[idx] if lw is None else np.asarray(lw, np.float32).copy()


class SeqModel:
    def __init__(self, seq: int, model: str, layout, dtype):
        self.seq, self.model, self.dtype = seq, model, np.dtype(dtype)
        self.L, self.H, self.HQ, self.D, self.PT = (layout.layers, layout.kv_heads, layout.q_heads,
                                                    layout.head_dim, layout.page_tokens)
        # Only owning layers have heads here; an aliased layer reads its owner's.
        self.heads = {(l, h): Head(self.D, self.dtype) for l in range(self.L) for h in range(self.H)}
        self.aliases: dict[int, int] = {}
        self.length = 0
        self.generation = 1

    def owner(self, layer: int) -> int:
        return self.aliases.get(layer, layer)

    def counts(self) -> list[int]:
        return [len(st.pos) for st in self.heads.values()]

    def pages(self, reserved: int = 0) -> int:
        """Pages held, counting those of an open reservation of ``reserved`` tokens."""
        return sum(-(-(n + reserved) // self.PT) for n in self.counts())

    def append(self, k: np.ndarray, v: np.ndarray) -> None:
        """Tokens ``k``/``v`` [L, H, n, D] appended at positions length.. (aliased layers' parts
        are ignored by the daemon, so here too)."""
        n = k.shape[2]
        pos = np.arange(self.length, self.length + n, dtype=np.int64)
        for (l, h), st in self.heads.items():
            st.k = np.concatenate([st.k, k[l, h]])
            st.v = np.concatenate([st.v, v[l, h]])
            st.pos = np.concatenate([st.pos, pos])
            st.lw = np.concatenate([st.lw, np.zeros(n, np.float32)])
        self.length += n

    def kept_indices(self, key, positions) -> np.ndarray:
        """Indices into head ``key``'s tokens of the kept ``positions``; fails unless they are
        sorted, unique and all held by that head."""
        st = self.heads[key]
        p = np.asarray(positions, np.int64)
        assert np.all(np.diff(p) > 0), f"head {key}: kept positions not ascending: {p.tolist()}"
        idx = np.searchsorted(st.pos, p)
        ok = (idx < len(st.pos)) & (st.pos[np.minimum(idx, len(st.pos) - 1)] == p) if len(p) else []
        assert np.all(ok), (f"head {key}: kept positions {p.tolist()} are not a subset of "
                            f"{st.pos.tolist()}")
        return idx

    def alias(self, new: dict[int, int]) -> None:
        """Applies an alias map as kvd does: owner resolved through existing aliases, layers that
        aliased a now-aliased layer follow it; aliased layers drop their heads."""
        for layer, owner in sorted(new.items()):
            self.aliases[layer] = self.aliases.get(owner, owner)
        for l, o in list(self.aliases.items()):
            self.aliases[l] = self.aliases.get(o, o)
        for l in self.aliases:
            for h in range(self.H):
                self.heads.pop((l, h), None)

    def state(self):
        """Everything a compaction may change, for 'did anything change' (generation) checks."""
        return (sorted(self.aliases.items()),
                [(key, st.pos.tobytes(), bits(st.lw).tobytes()) for key, st in self.heads.items()])


def check_query(c, sm: SeqModel, mode: str, layers=None) -> None:
    """A Query of ``sm`` in ``mode`` (optionally some layers) answers exactly what the model holds."""
    q = c.query(sm.seq, layers=layers, mode=mode)
    what = f"seq {sm.seq} ({sm.model}) {mode} query"
    assert (q.generation, q.length) == (sm.generation, sm.length), (
        f"{what}: generation/length {(q.generation, q.length)} != {(sm.generation, sm.length)}")
    want_layers = sorted(layers) if layers else range(sm.L)
    assert [(hd.layer, hd.head) for hd in q] == [(l, h) for l in want_layers for h in range(sm.H)], what
    for hd in q:
        o = sm.owner(hd.layer)
        st = sm.heads[(o, hd.head)]
        where = f"{what} head ({hd.layer},{hd.head})"
        assert bool(hd.aliased) == (hd.layer in sm.aliases), f"{where}: aliased {hd.aliased}"
        if hd.aliased:
            assert hd.owner_layer == o, f"{where}: owner {hd.owner_layer} != {o}"
        assert hd.num_tokens == len(st.pos), f"{where}: {hd.num_tokens} tokens != {len(st.pos)}"
        assert hd.positions.tolist() == st.pos.tolist(), f"{where}: positions differ"
        assert bits(hd.log_weights).tolist() == bits(st.lw).tolist(), f"{where}: log-weights differ"
        if mode != "metadata":
            assert_bits_equal(hd.keys, st.k, f"{where} K")
            assert_bits_equal(hd.values, st.v, f"{where} V")


def check_stats(c, sm: SeqModel, reserved: int = 0) -> None:
    st = c.stats(sm.seq).sequence
    got = (st.sequence_id, st.model, st.length, st.generation, st.pages, st.tokens_held,
           st.reserved_tokens, st.aliased_layers)
    want = (sm.seq, sm.model, sm.length, sm.generation, sm.pages(reserved), sum(sm.counts()), reserved,
            len(sm.aliases))
    assert got == want, f"seq {sm.seq} stats (id, model, length, generation, pages, tokens, " \
                        f"reserved, aliased) {got} != {want}"


# ---------------------------------------------------------------------------------------------
# What each method must keep, given a head's token count n (indices into the head's tokens).

def streaming_expect(n: int, sinks: int, recent: int) -> np.ndarray:
    if n <= sinks + recent:
        return np.arange(n)
    return np.concatenate([np.arange(sinks), np.arange(n - recent, n)])


def check_topk_shape(idx: np.ndarray, n: int, budget: int, window: int, where: str) -> None:
    """A budgeted top-k plan: min(budget, n - window) tokens before the window, then the window."""
    want = min(budget, n - window) + window
    assert len(idx) == want, f"{where}: kept {len(idx)} of {n}, expected {want} " \
                             f"(budget {budget}, window {window})"
    assert idx[len(idx) - window:].tolist() == list(range(n - window, n)), f"{where}: window dropped"


def check_balance(idx, n, sinks, recent, itrs, old_lw, new_lw, where: str) -> None:
    """BalanceKV keeps the sinks and the recent tokens with their log-weights, and adds log of the
    walk's weight (a product of per-round weights 1 or 2) to each kept middle token's."""
    if n <= sinks + recent:
        return
    assert idx[:sinks].tolist() == list(range(sinks)), f"{where}: sinks dropped: {idx.tolist()}"
    tail = idx[len(idx) - recent:] if recent else idx[:0]
    assert tail.tolist() == list(range(n - recent, n)), f"{where}: recent dropped: {idx.tolist()}"
    old = old_lw[idx]
    fixed = np.r_[0:sinks, len(idx) - recent:len(idx)]
    assert bits(new_lw[fixed]).tolist() == bits(old[fixed]).tolist(), f"{where}: sink/recent weights"
    delta = (new_lw[sinks:len(idx) - recent].astype(np.float64)
             - old[sinks:len(idx) - recent].astype(np.float64)) / LN2
    ok = np.isfinite(delta) & (np.abs(delta - np.round(delta)) < 1e-3) & \
        (np.round(delta) >= 0) & (np.round(delta) <= itrs)
    assert np.all(ok), f"{where}: middle log-weight deltas / ln2 not in 0..{itrs}: {delta.tolist()}"
