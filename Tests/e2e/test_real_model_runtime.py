"""KvdCache's persistent buffers and SDPA attention on the real model (SmolLM2-135M-Instruct, f32)
against a real daemon with an f32 and an f16 SmolLM2 layout:

* full cache: greedy tokens identical to plain transformers (sdpa, DynamicCache) for both layouts,
  no Query at all (the buffers are filled by the forward passes), and the buffers hold exactly what
  kvd holds (bitwise, in kvd's dtype);
* after a compaction (SnapKV, BalanceKV with log-weights, KVSharer aliases) the attention output of
  every layer and query head at the next decode step equals softmax(q·kᵀ/√d + log-weight)·v over the
  tokens kvd kept, computed in NumPy (kvd.attention_arrays);
* a compaction sent straight to the daemon between steps is picked up from the next Append reply's
  generation and the buffers are refilled (then they match kvd again), whichever Query mode refills;
* friction items: a model on sdpa attention gets the "load with attn_implementation='kvd'" hint
  before any request for every method; window queries go only to methods that need them;
  ``compact_after_prefill="auto"`` lets the daemon's rules pick the policy; a dropped cache releases
  its sequence (and never raises once its client is closed); the package docstring example runs
  against a daemon on the bundled Config/kvd.yaml.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from real_model_gate import LICENSE, require  # noqa: E402

require("real-model runtime test")

import torch  # noqa: E402

from attention_recorder import Recorder  # noqa: E402
from conftest import (SMOLLM2_F32, SMOLLM2_LAYOUT, Daemon, default_config, serving,  # noqa: E402
                      model_entry)
from kvd import attention_arrays  # noqa: E402
from kvd_transformers import KvdCache, load_smollm2, register_attention  # noqa: E402

F32, F16 = SMOLLM2_F32, "smollm2-135m-f16"
L, H, D = SMOLLM2_LAYOUT["layers"], SMOLLM2_LAYOUT["kv_heads"], SMOLLM2_LAYOUT["head_dim"]
G = SMOLLM2_LAYOUT["q_heads"] // H
PROMPT = 160
NEW = 6
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def daemon(kvd_bin):
    workdir = Path(tempfile.mkdtemp(prefix="kvd-rt-", dir="/tmp"))
    cfg = default_config(f"/kvd-test-{uuid.uuid4().hex}", f"ipc://{workdir}/kvd.sock")
    cfg["models"] += [model_entry(F32, "f32", **SMOLLM2_LAYOUT),
                      model_entry(F16, "f16", **SMOLLM2_LAYOUT)]
    cfg["arena"].update(size_bytes="128MiB", staging_bytes="16MiB")
    cfg["server"].update(max_message_bytes="64MiB", max_tokens_per_append=4096)
    cfg["policies"] = {"rt-snap": {"method": "snapkv", "params": {"budget": 48}},
                       "rt-knorm": {"scorer": "knorm", "allocator": "uniform",
                                    "params": {"budget": 48, "window": 8}}}
    # Compact requests naming no policy on a long f32 sequence: the rule picks rt-snap.
    cfg["rules"] = [{"when": {"length_above": 100, "model": F32}, "policy": "rt-snap"}]
    with serving(workdir, cfg) as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon):
    c = daemon.client(timeout_ms=60000)
    yield c
    c.close()


@pytest.fixture(scope="module")
def smollm2():
    register_attention()
    return load_smollm2(attn_implementation="sdpa")


@pytest.fixture(scope="module")
def prompt(smollm2):
    return torch.tensor([smollm2[1](LICENSE.read_text()).input_ids[:PROMPT]])


def generate(model, ids, cache=None, attn="kvd", new=NEW):
    model.set_attn_implementation(attn)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache,
                             max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             pad_token_id=model.config.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def step(model, cache, token: int):
    """One decode forward pass of ``token``; returns its logits."""
    model.set_attn_implementation("kvd")
    with torch.no_grad():
        return model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True).logits[0, -1]


def assert_buffers_mirror_kvd(client, cache):
    """Every non-aliased layer's buffer = kvd's kept tokens (heads padded), bias = log-weights."""
    q = client.query(cache.sequence_id, copy=True)
    for layer in range(L):
        if q[layer, 0].aliased:
            assert cache.aliases.get(layer) == q[layer, 0].owner_layer
            continue
        buf = cache._buffers[layer]
        counts = [q[layer, h].num_tokens for h in range(H)]
        assert buf.n == max(counts), (layer, buf.n, counts)
        for h in range(H):
            n, hd = counts[h], q[layer, h]
            for name, got, want in (("keys", buf.k[0, h, :n], hd.keys), ("values", buf.v[0, h, :n], hd.values)):
                got = got.numpy().astype(hd.keys.dtype)
                assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), \
                    f"layer {layer} head {h} {name} differ from kvd"
            np.testing.assert_array_equal(buf.bias[h, :n].numpy(), hd.log_weights)
            assert torch.isneginf(buf.bias[h, n:buf.n]).all(), "padding must have bias -inf"


def assert_attention_matches_kvd(client, cache, rec: Recorder):
    """The last decode step's attention output of every layer and query head = the NumPy formula
    over the tokens kvd holds now (kept tokens and the new one, log-weights as kvd has them)."""
    q = client.query(cache.sequence_id, copy=True)
    for layer in range(L):
        query, out = rec.calls[layer]
        for qh in range(H * G):
            hd = q[layer, qh // G]
            want = attention_arrays(query[0, qh, -1].double().numpy(), hd.keys, hd.values,
                                    hd.log_weights)
            np.testing.assert_allclose(out[0, -1, qh].double().numpy(), want, rtol=2e-4, atol=2e-5,
                                       err_msg=f"layer {layer} query head {qh}")


# ---------------------------------------------------------------------------------------------
# full cache

@pytest.mark.parametrize("layout", [F32, F16])
def test_full_cache_identical_to_transformers(smollm2, client, prompt, layout):
    model, _ = smollm2
    want = generate(model, prompt, attn="sdpa")
    with KvdCache(client, layout, config=model.config) as cache:
        got = generate(model, prompt, cache)
        assert got == want, f"{layout}: greedy tokens differ from transformers"
        assert cache.refreshes == 0, "a full cache never needs a Query"
        assert cache.get_seq_length() == PROMPT + NEW - 1 == cache.stats().length
        assert_buffers_mirror_kvd(client, cache)


# ---------------------------------------------------------------------------------------------
# after a compaction

@pytest.mark.parametrize("kw", [
    dict(method="snapkv", params={"budget": 40}),
    dict(method="balancekv"),
    dict(method="kvsharer", params={"alias_map": "29:28,27:26"}),
], ids=["snapkv", "balancekv", "kvsharer"])
def test_compacted_attention_matches_reference(smollm2, client, prompt, kw):
    model, _ = smollm2
    model.set_attn_implementation("kvd")
    with KvdCache(client, F32, config=model.config, **kw) as cache:
        with torch.no_grad():
            logits = model(input_ids=prompt, cache=cache, use_cache=True).logits[0, -1]
        assert len(cache.compactions) == 1 and cache.refreshes == 0
        with Recorder() as rec:
            step(model, cache, int(logits.argmax()))
        assert cache.refreshes == 1, "the compaction must refill the buffers once"
        assert_attention_matches_kvd(client, cache, rec)
        assert_buffers_mirror_kvd(client, cache)
        if kw["method"] == "balancekv":
            lw = np.concatenate([h.log_weights for h in client.query(cache.sequence_id, mode="metadata")])
            assert np.count_nonzero(lw) > 0, "no log-weights after BalanceKV"
            assert not all(b.plain for b in cache._buffers), "log-weights must make a mask"
        if kw["method"] == "kvsharer":
            assert cache.aliases == {29: 28, 27: 26}


@pytest.mark.parametrize("query_mode", ["pages", "gather", "auto"])
def test_daemon_compaction_between_steps_is_picked_up(smollm2, client, prompt, query_mode):
    model, _ = smollm2
    model.set_attn_implementation("kvd")
    with KvdCache(client, F32, config=model.config, query_mode=query_mode) as cache:
        with torch.no_grad():
            tok = int(model(input_ids=prompt, cache=cache, use_cache=True).logits[0, -1].argmax())
        tok = int(step(model, cache, tok).argmax())
        resp = client.compact(cache.sequence_id, "streamingllm", sinks=4, recent=24)  # not via the cache
        assert resp.generation != cache._generation
        tok = int(step(model, cache, tok).argmax())   # its Append reply carries the new generation
        assert cache._stale and cache.refreshes == 0
        with Recorder() as rec:
            step(model, cache, tok)
        assert cache.refreshes == 1 and not cache._stale
        assert cache._generation == resp.generation
        assert_attention_matches_kvd(client, cache, rec)
        assert_buffers_mirror_kvd(client, cache)


# ---------------------------------------------------------------------------------------------
# friction items

@pytest.mark.parametrize("method", ["snapkv", "streamingllm", "balancekv"])
@pytest.mark.parametrize("with_config", [True, False], ids=["config", "no-config"])
def test_sdpa_model_gets_the_hint_before_any_request(smollm2, client, prompt, method, with_config):
    model, _ = smollm2
    before = client.stats().sequences
    cache = KvdCache(client, F32, method=method, config=model.config if with_config else None)
    try:
        with pytest.raises(RuntimeError) as e:
            generate(model, prompt, cache, attn="sdpa")
        msg = str(e.value)
        assert "attn_implementation='kvd'" in msg and "register_attention()" in msg, msg
        assert cache.stats().length == 0, "nothing may be appended before the hint"
        assert cache.compactions == []
    finally:
        cache.release()
    assert client.stats().sequences == before


@pytest.mark.parametrize("kw,sent", [
    (dict(method="streamingllm", params={"sinks": 4, "recent": 32}), False),
    (dict(method="snapkv", params={"budget": 40}), True),
    (dict(policy="rt-snap"), True),
    (dict(policy="rt-knorm"), False),
], ids=["streamingllm", "snapkv", "policy-snapkv", "policy-knorm"])
def test_window_queries_only_for_methods_that_need_them(smollm2, client, prompt, kw, sent):
    model, _ = smollm2
    with KvdCache(client, F32, config=model.config, **kw) as cache:
        generate(model, prompt, cache, new=2)
        assert len(cache.compactions) == 1
        assert cache.queries_sent is sent


def test_needs_queries_from_hello(client):
    from kvd_transformers.queries import needs_queries
    hello = client.hello()
    listed = {m.name: m.needs_queries for m in hello.methods}
    assert listed["snapkv"] and not listed["streamingllm"] and not listed["knorm"]
    for name, needs in listed.items():
        assert needs_queries(hello, name, "") is needs
    assert needs_queries(hello, "", "rt-snap") and not needs_queries(hello, "", "rt-knorm")
    assert needs_queries(hello, "", "")            # the daemon's rules decide: unknown here
    assert needs_queries(hello, "no-such-method", "") and needs_queries(hello, "", "no-such-policy")


def test_compact_after_prefill_auto_uses_the_daemons_rules(smollm2, client, prompt):
    model, _ = smollm2
    with KvdCache(client, F32, compact_after_prefill="auto", config=model.config) as cache:
        generate(model, prompt, cache, new=2)
        assert len(cache.compactions) == 1
        resp = cache.compactions[0]
        assert resp.policy == "rt-snap" and resp.method == "snapkv", (resp.policy, resp.method)
        assert "rule" in resp.chosen_by, resp.chosen_by
        assert cache.queries_sent
    with KvdCache(client, F32, config=model.config) as cache:   # default: no method, no Compact
        generate(model, prompt, cache, new=2)
        assert cache.compactions == []
    with pytest.raises(ValueError, match="compact_after_prefill"):
        KvdCache(client, F32, compact_after_prefill="sometimes")


def test_dropped_cache_releases_its_sequence(smollm2, daemon, client, prompt):
    model, _ = smollm2
    before = client.stats().sequences
    cache = KvdCache(client, F32, config=model.config)
    generate(model, prompt[:, :20], cache, new=2)
    assert client.stats().sequences == before + 1
    del cache
    gc.collect()
    assert client.stats().sequences == before, "a dropped KvdCache must release its sequence"

    # Its client closed first: the finalizer does nothing and raises nothing.
    other = daemon.client()
    cache = KvdCache(other, F32, config=model.config)
    other.close()
    unraisable = []
    import sys
    old, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        del cache
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert unraisable == []


def test_dropped_cache_collected_inside_a_request_does_not_deadlock(smollm2, client):
    """The cyclic garbage collector may finalize a dropped cache while this thread is inside one of
    the same client's requests (holding its lock): the release then happens on another thread."""
    model, _ = smollm2
    before = client.stats().sequences
    cache = KvdCache(client, F32, config=model.config)
    assert client.stats().sequences == before + 1
    finalizer = cache._finalizer
    del cache
    done = threading.Event()

    def collect_while_holding_the_lock():
        with client._io:  # as inside a round trip
            finalizer()   # what gc would run here
        done.set()

    t = threading.Thread(target=collect_while_holding_the_lock, daemon=True)
    t.start()
    assert done.wait(10), "the finalizer blocked on the lock its own thread holds"
    deadline = time.monotonic() + 10
    while client.stats().sequences != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.stats().sequences == before, "the deferred release never happened"


def test_docstring_example_runs_on_the_bundled_config(kvd_bin):
    import kvd_transformers
    doc = kvd_transformers.__doc__
    block = doc[doc.index("    from kvd import Client"):doc.index("Needs the")]
    code = textwrap.dedent(block)
    assert '"smollm2-135m"' in code and "ipc:///tmp/kvd-default.sock" in code
    workdir = Path(tempfile.mkdtemp(prefix="kvd-doc-", dir="/tmp"))
    endpoint, shm = f"ipc://{workdir}/kvd.sock", f"/kvd-test-{uuid.uuid4().hex}"
    text = (REPO / "Config" / "kvd.yaml").read_text()
    assert '"ipc:///tmp/kvd-default.sock"' in text and 'shm_name: "/kvd-default"' in text
    text = text.replace('"ipc:///tmp/kvd-default.sock"', f'"{endpoint}"')
    text = text.replace('shm_name: "/kvd-default"', f'shm_name: "{shm}"')
    for sub in ("head_scores", "kvsharer"):
        if (REPO / "Config" / sub).is_dir():
            shutil.copytree(REPO / "Config" / sub, workdir / sub)
    d = Daemon(workdir, {"server": {"endpoints": [endpoint]}, "arena": {"shm_name": shm}})
    d.config_path.write_text(text)
    d.start()
    try:
        ns: dict = {}
        exec(compile(code.replace("ipc:///tmp/kvd-default.sock", endpoint), "docstring", "exec"), ns)
        assert ns["out"].shape[1] > ns["input_ids"].shape[1]
        ns["client"].close()
    finally:
        rc = d.stop()
        if d.shm_path.exists():
            d.shm_path.unlink()
        shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 0
