"""The kvd attention function's sliding-window mask and a KvdCache buffer's trim, on random
tensors (no daemon, no model): the output equals a float64 softmax over exactly the keys a query
may see — causal, and ``position > q − window`` by each key's recorded position (not its column) —
with log-weights and padding; and ``LayerBuffer.trim`` drops only leading columns no head still
needs. Needs torch (the ``model`` extra); skipped without it."""

from __future__ import annotations

import importlib.util
import math

import pytest

if importlib.util.find_spec("torch") is None:
    pytest.skip("sliding attention test needs torch (pip install 'kvd-client[model]')",
                allow_module_level=True)

import torch  # noqa: E402

from kvd_transformers.attention import LayerContext, kvd_attention  # noqa: E402
from kvd_transformers.buffers import PAD_POS, LayerBuffer  # noqa: E402


class Sink:
    def _record_queries(self, layer, query):
        pass

    def _attention_done(self, layer):
        pass


def reference(q, k, v, kpos, bias, qpos, window, scale):
    """float64, one loop per query head and row: the independent formula."""
    hq, t, _ = q.shape
    g = hq // k.shape[0]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for h in range(hq):
        kh, vh = k[h // g].double(), v[h // g].double()
        for i in range(t):
            s = kh @ q[h, i].double() * scale + bias[h // g].double()
            seen = kpos[h // g] <= qpos[i]
            if window:
                seen &= kpos[h // g] > qpos[i] - window
            s = torch.where(seen, s, torch.tensor(-math.inf, dtype=torch.float64))
            out[h, i] = torch.softmax(s, 0) @ vh
    return out


def filled_buffer(hkv, d, prefix, start, gaps: bool):
    """A buffer holding ``prefix`` retained tokens from ``start`` (every other position per head
    when ``gaps``: what a compaction leaves; head 1 also one token shorter, padded)."""
    buf = LayerBuffer(hkv, d, torch.float32, "cpu")
    step = 2 if gaps else 1
    pos = torch.stack([torch.arange(start + h, start + h + step * prefix, step) for h in range(hkv)])
    bias = torch.randn(hkv, prefix) * 0.3 if gaps else torch.zeros(hkv, prefix)
    if gaps and hkv > 1 and prefix:
        bias[1, -1] = -math.inf
        pos[1, -1] = PAD_POS
    buf.load(torch.randn(1, hkv, prefix, d), torch.randn(1, hkv, prefix, d), bias, pos)
    return buf, (start + step * prefix + hkv if prefix else start)


@pytest.mark.parametrize("hkv,g", [(1, 4), (2, 2)], ids=["mqa", "gqa"])
@pytest.mark.parametrize("prefix,t,window,gaps", [
    (0, 40, 16, False),    # a prefill longer than the window
    (30, 1, 16, False),    # decode, some keys out of the window
    (30, 7, 16, False),    # a chunk after a prefix
    (30, 7, 0, False),     # a full layer
    (5, 1, 16, False),     # nothing out of the window: the unmasked path
    (30, 1, 16, True),     # after a compaction: per-head positions, log-weights, padding
    (30, 9, 24, True),
])
def test_window_mask_matches_reference(hkv, g, prefix, t, window, gaps):
    torch.manual_seed(prefix * 100 + t)
    d = 8
    buf, first = filled_buffer(hkv, d, prefix, 100, gaps)
    buf.write(torch.randn(1, hkv, t, d), torch.randn(1, hkv, t, d), first)
    q = torch.randn(1, hkv * g, t, d)
    ctx = LayerContext(Sink(), 0, buf.bias, buf.plain, buf.pos, first)
    out, _ = kvd_attention(None, q, buf.keys(), buf.values(), scaling=0.3,
                           sliding_window=window or None, kvd_layer=ctx)
    want = reference(q[0], buf.keys()[0], buf.values()[0], buf.pos[:, :buf.n],
                     buf.bias[:, :buf.n], torch.arange(first, first + t), window, 0.3)
    torch.testing.assert_close(out[0].transpose(0, 1).double(), want, rtol=1e-5, atol=1e-6)
    assert ctx.window == window


def test_window_without_positions_uses_consecutive_keys():
    """No KvdCache context: keys are consecutive positions ending at the last query."""
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 1, 20, 8), torch.randn(1, 1, 20, 8)
    out, _ = kvd_attention(None, q, k, v, scaling=0.5, sliding_window=6)
    want = reference(q[0], k[0], v[0], torch.arange(20)[None], torch.zeros(1, 20),
                     torch.arange(17, 20), 6, 0.5)
    torch.testing.assert_close(out[0].transpose(0, 1).double(), want, rtol=1e-5, atol=1e-6)


def test_trim_drops_only_what_no_head_needs():
    buf = LayerBuffer(2, 4, torch.float32, "cpu")
    pos = torch.tensor([list(range(10)), [0, 2, 4, 6, 8, 10] + [PAD_POS] * 4])
    bias = torch.tensor([[0.0] * 10, [0.0] * 6 + [-math.inf] * 4])
    k = torch.randn(1, 2, 10, 4)
    buf.load(k, torch.randn(1, 2, 10, 4), bias, pos)
    buf.write(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), 20)
    # Column 3 is the first where a head (head 1: position 6) holds a token at >= 5.
    assert buf.trim(5) == 3
    assert buf.n == 10
    assert buf.pos[0, :buf.n].tolist() == [3, 4, 5, 6, 7, 8, 9, 20, 21, 22]
    assert torch.equal(buf.k[:, :, :7], k[:, :, 3:])
    assert buf.trim(5) == 0, "nothing more to drop"
    assert buf.trim(20) == 7 and buf.pos[0, :buf.n].tolist() == [20, 21, 22]
