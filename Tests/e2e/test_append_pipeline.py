"""Commit.keep_reserved and kvd.AppendPipeline against the real daemon: a pipelined decode loop
stores exactly what inline Appends store, failures surface at the next call naming the step, other
calls interleave with commits in flight, close() gives the unused tail back, range errors."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (MODEL_F16, MODEL_F32, TINY, TINY_MODELS, Client, ErrorCode, KvdError,
                      assert_bits_equal, make_kv)
from memory_helpers import create, memory_config, wait_until
from kvd import AppendPipeline, PipelineError

STEPS = 200


def small_pages(cfg):
    """Only the tiny models: 128–256-byte pages, so a 1 MiB arena holds thousands."""
    cfg["models"] = [m for m in cfg["models"] if m["name"] in TINY_MODELS]
    cfg["server"]["max_sequences"] = 64


@pytest.fixture
def pc(make_daemon):
    d = make_daemon(small_pages)
    c = d.client()
    yield c
    c.close()


def heads_of(c, seq, mode):
    return [(h.layer, h.head, h.keys.copy(), h.values.copy(), h.positions.copy(),
             h.log_weights.copy()) for h in c.query(seq, mode=mode)]


def assert_same_sequence(c, a, b):
    for mode in ("pages", "inline"):
        qa, qb = c.query(a, mode=mode), c.query(b, mode=mode)
        assert (qa.length, qa.generation) == (qb.length, qb.generation)
        for ha, hb in zip(qa, qb):
            assert (ha.layer, ha.head, ha.num_tokens) == (hb.layer, hb.head, hb.num_tokens)
            assert_bits_equal(ha.keys, hb.keys, f"{mode} K({ha.layer},{ha.head})")
            assert_bits_equal(ha.values, hb.values, f"{mode} V({ha.layer},{ha.head})")
            assert ha.positions.tolist() == hb.positions.tolist()
            assert ha.log_weights.tobytes() == hb.log_weights.tobytes()


@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("window,ahead", [(1, 64), (4, 7)], ids=["w1-a64", "w4-a7"])
def test_decode_loop_matches_inline_appends(pc, model, window, ahead):
    k, v = make_kv(model, STEPS, seed=hash((model, window)) & 0xFFFF)
    inline, piped = pc.create_sequence(model), pc.create_sequence(model)
    with AppendPipeline(pc, piped, reserve_ahead=ahead, max_in_flight=window) as p:
        for t in range(STEPS):
            pc.append(inline, k[:, :, t:t + 1], v[:, :, t:t + 1], token_ids=[t])
            p.append(k[:, :, t:t + 1], v[:, :, t:t + 1], token_ids=[t])
        p.flush()
        assert p.confirmed_length == STEPS and p.steps == STEPS
    assert_same_sequence(pc, inline, piped)
    st = pc.stats(piped).sequence
    assert (st.length, st.reserved_tokens) == (STEPS, 0)
    assert st.pages == pc.stats(inline).sequence.pages, "close() gave the unused tail back"


def test_multi_token_steps_span_reservations(pc):
    k, v = make_kv(MODEL_F16, 50, seed=3)
    a, b = pc.create_sequence(MODEL_F16), pc.create_sequence(MODEL_F16)
    pc.append(a, k, v)
    with AppendPipeline(pc, b, reserve_ahead=6) as p:
        t = 0
        for n in (1, 5, 3, 9, 13, 1, 18):  # across reservation ends, and more than reserve_ahead
            p.append(k[:, :, t:t + n], v[:, :, t:t + n])
            t += n
    assert_same_sequence(pc, a, b)


def test_other_calls_interleave_with_commits_in_flight(pc):
    k, v = make_kv(MODEL_F32, 60, seed=5)
    seq = pc.create_sequence(MODEL_F32)
    other = pc.create_sequence(MODEL_F16)
    with AppendPipeline(pc, seq, reserve_ahead=8, max_in_flight=8) as p:
        for t in range(60):
            p.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
            if t % 7 == 3:
                # Commits of earlier steps are unanswered: each call collects them first, and
                # kvd applies a sequence's requests in order, so the query sees every step sent.
                assert pc.query(seq, mode="metadata").length == t + 1
                assert pc.stats(seq).sequence.length == t + 1
                assert pc.stats().sequences == 2
                pc.append(other, *make_kv(MODEL_F16, 1, seed=t))
    q = pc.query(seq, mode="inline")
    for h in q:
        assert_bits_equal(h.keys, k[h.layer, h.head])
        assert_bits_equal(h.values, v[h.layer, h.head])
    assert pc.stats(other).sequence.length == 9


def test_close_aborts_the_unused_tail(pc):
    free0 = pc.stats().free_pages
    seq = pc.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 5, seed=1)
    p = AppendPipeline(pc, seq, reserve_ahead=64)
    for t in range(5):
        p.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
    p.flush()
    st = pc.stats(seq).sequence
    heads = TINY["layers"] * TINY["kv_heads"]
    assert (st.length, st.reserved_tokens) == (5, 59)
    assert st.pages == heads * 16  # 64 tokens reserved / 4 per page
    p.close()
    st = pc.stats(seq).sequence
    assert (st.length, st.reserved_tokens, st.pages) == (5, 0, heads * 2)
    assert pc.stats().free_pages == free0 - heads * 2
    with pytest.raises(KvdError) as e:
        p.append(k[:, :, :1], v[:, :, :1])
    assert e.value.code == ErrorCode.FAILED_PRECONDITION and "closed" in e.value.message
    pc.append(seq, k, v)  # no reservation left open: inline appends work again


def test_a_commit_refused_after_release_is_raised_at_the_next_call(pc, make_daemon):
    seq = pc.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 12, seed=9)
    p = AppendPipeline(pc, seq, reserve_ahead=16, max_in_flight=4)
    for t in range(10):
        p.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
    p.flush()
    pc.release(seq)  # as another client of the tenant could
    p.append(k[:, :, 10:11], v[:, :, 10:11])  # sent, not answered yet
    with pytest.raises(PipelineError) as e:
        pc.stats()  # the next request collects the refusal first
    err = e.value
    assert (err.kind, err.step, err.first_position, err.tokens) == ("commit", 10, 10, 1)
    assert err.code == ErrorCode.NOT_FOUND and err.confirmed_length == 10
    assert "step 10" in err.message and "nothing of that step was published" in err.message
    assert pc.stats().sequences == 0  # the client works on
    with pytest.raises(PipelineError) as again:
        p.append(k[:, :, 11:12], v[:, :, 11:12])  # sticky: a refused commit ends the pipeline
    assert again.value is err
    p.close()  # already reported: closes quietly


def test_reserve_that_does_not_fit_is_reported_and_nothing_half_published(make_daemon):
    def cfg(c):
        small_pages(c)
        c["arena"]["size_bytes"] = "256KiB"
        c["arena"]["staging_bytes"] = "16KiB"
    d = make_daemon(cfg)
    c = d.client()
    seq = c.create_sequence(MODEL_F32)
    k, v = make_kv(MODEL_F32, 40, seed=11)
    p = AppendPipeline(c, seq, reserve_ahead=8, max_in_flight=2)
    for t in range(8):
        p.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
    p.flush()  # the 8th commit used the reservation up; the next Reserve was answered: 8 more fit
    filler = c.create_sequence(MODEL_F32)
    while True:  # fill the arena: the Reserve after those 8 finds no room
        try:
            c.append(filler, *make_kv(MODEL_F32, 4, seed=3))
        except KvdError as full:
            assert full.code == ErrorCode.RESOURCE_EXHAUSTED
            break
    sent = 8
    with pytest.raises(PipelineError) as e:
        for t in range(8, 40):
            p.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
            sent = t + 1
    assert sent == 16, "the step that needed the refused reservation sent nothing"
    assert e.value.step == 16
    err = e.value
    assert err.kind == "reserve" and err.code == ErrorCode.RESOURCE_EXHAUSTED
    assert "reserve of 8 token(s)" in err.message
    p.flush()  # a refused reserve is not sticky: nothing else is due
    st = c.stats(seq).sequence
    assert (st.length, st.reserved_tokens) == (sent, 0)
    for h in c.query(seq, mode="inline"):
        assert_bits_equal(h.keys, k[h.layer, h.head, :sent])
    # With room again, the same pipeline goes on.
    c.release(filler)
    p.append(k[:, :, sent:sent + 1], v[:, :, sent:sent + 1])
    p.close()
    assert c.stats(seq).sequence.length == sent + 1
    c.close()


def test_keep_reserved_range_errors_change_nothing(pc):
    seq = pc.create_sequence(MODEL_F16)
    r = pc.reserve(seq, 5)
    got = pc.commit(seq, r.reservation_id, 2, keep_reserved=True)
    assert (got.length, got.first_position, got.reserved_remaining) == (2, 0, 3)
    cases = [
        (dict(num_tokens=0, keep_reserved=True), ErrorCode.INVALID_ARGUMENT, "at least 1"),
        (dict(num_tokens=4, keep_reserved=True), ErrorCode.FAILED_PRECONDITION,
         "num_tokens 4 is more than the 3 still reserved"),
        (dict(num_tokens=2**32 - 1, keep_reserved=True), ErrorCode.FAILED_PRECONDITION,
         "more than the 3 still reserved"),
        (dict(num_tokens=1, keep_reserved=True, abort=True), ErrorCode.INVALID_ARGUMENT,
         "send one of them"),
        (dict(num_tokens=2, keep_reserved=True, token_ids=[1]), ErrorCode.INVALID_ARGUMENT,
         "token_ids"),
    ]
    for kw, code, text in cases:
        with pytest.raises(KvdError) as e:
            pc.commit(seq, r.reservation_id, **kw)
        assert e.value.code == code and text in e.value.message, (kw, e.value)
        st = pc.stats(seq).sequence
        assert (st.length, st.reserved_tokens) == (2, 3), kw
    with pytest.raises(KvdError) as e:
        pc.commit(seq, r.reservation_id + 1, 1, keep_reserved=True)
    assert e.value.code == ErrorCode.NOT_FOUND
    # Another connection may not commit it, kept or not.
    other = Client(pc.endpoint)
    with pytest.raises(KvdError) as e:
        other.commit(seq, r.reservation_id, 1, keep_reserved=True)
    assert e.value.code == ErrorCode.PERMISSION_DENIED
    other.close()
    # While it is open the sequence refuses Append, Reserve and Compact as before.
    for call in (lambda: pc.append(seq, *make_kv(MODEL_F16, 1, seed=1)),
                 lambda: pc.reserve(seq, 1), lambda: pc.compact(seq, "streamingllm")):
        with pytest.raises(KvdError) as e:
            call()
        assert e.value.code == ErrorCode.FAILED_PRECONDITION
    got = pc.commit(seq, r.reservation_id, 3, keep_reserved=True)
    assert (got.length, got.first_position, got.reserved_remaining) == (5, 2, 0)
    with pytest.raises(KvdError) as e:  # the last token closed it
        pc.commit(seq, r.reservation_id, 1, keep_reserved=True)
    assert e.value.code == ErrorCode.NOT_FOUND


def test_pipeline_argument_errors(pc):
    seq = pc.create_sequence(MODEL_F16)
    for kw in (dict(reserve_ahead=0), dict(max_in_flight=0), dict(reserve_ahead=1.5)):
        with pytest.raises(KvdError) as e:
            AppendPipeline(pc, seq, **kw)
        assert e.value.code == ErrorCode.INVALID_ARGUMENT
    p = AppendPipeline(pc, seq)
    k, v = make_kv(MODEL_F16, 2, seed=1)
    bad = [(k.astype(np.float32), v.astype(np.float32), None), (k[:, :1], v[:, :1], None),
           (k, v[:, :, :1], None), (k[:, :, :0], v[:, :, :0], None), (k, v, [1])]
    for kk, vv, ids in bad:
        with pytest.raises(KvdError) as e:
            p.append(kk, vv, token_ids=ids)
        assert e.value.code == ErrorCode.INVALID_ARGUMENT
    p.close()
    assert pc.stats(seq).sequence.length == 0


def test_torch_tensors_are_taken_without_copies(pc):
    torch = pytest.importorskip("torch")
    for model, tdt in (("tiny-bf16", torch.bfloat16), (MODEL_F16, torch.float16)):
        seq, ref = pc.create_sequence(model), pc.create_sequence(model)
        kt = torch.randn(TINY["layers"], TINY["kv_heads"], 6, TINY["head_dim"]).to(tdt)
        vt = torch.randn(TINY["layers"], TINY["kv_heads"], 6, TINY["head_dim"]).to(tdt)
        with AppendPipeline(pc, seq, reserve_ahead=4) as p:
            for t in range(6):
                p.append(kt[:, :, t:t + 1], vt[:, :, t:t + 1])
        import ml_dtypes
        as_np = {torch.bfloat16: ml_dtypes.bfloat16, torch.float16: np.float16}[tdt]
        pc.append(ref, kt.view(torch.int16).numpy().view(as_np), vt.view(torch.int16).numpy().view(as_np))
        assert_same_sequence(pc, seq, ref)


def test_lease_expiry_aborts_an_open_pipelined_reservation(make_daemon):
    d = make_daemon(lambda cfg: memory_config(cfg, cfg["server"]["endpoints"][0],
                                              lease_seconds=1.0, orphan_grace_seconds=600))
    owner = Client(d.endpoint, keepalive=False)
    owner.hello()
    seq = create(owner)
    k, v = make_kv(MODEL_F16, 10, seed=4)
    p = AppendPipeline(owner, seq, reserve_ahead=32)
    for t in range(6):
        p.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
    p.flush()
    watcher = d.client()
    assert watcher.stats(seq).sequence.reserved_tokens == 26
    # The owner goes quiet past its lease: the reservation is aborted, the committed tokens stay.
    wait_until(lambda: watcher.stats(seq).sequence.reserved_tokens == 0, 4.0, "the abort")
    assert watcher.stats(seq).sequence.length == 6
    p.append(k[:, :, 6:7], v[:, :, 6:7])
    with pytest.raises(PipelineError) as e:
        p.flush()
    assert e.value.code == ErrorCode.NOT_FOUND and e.value.step == 6
    assert "has no open reservation" in e.value.message
    p.close()
    for h in watcher.query(seq, mode="inline"):
        assert_bits_equal(h.keys, k[h.layer, h.head, :6])
    owner.close()
    watcher.close()


def test_commit_every_batches_commits_and_any_call_sends_them_first(pc):
    k, v = make_kv(MODEL_F16, STEPS, seed=21)
    inline, piped = pc.create_sequence(MODEL_F16), pc.create_sequence(MODEL_F16)
    other = Client(pc.endpoint)
    with AppendPipeline(pc, piped, reserve_ahead=16, commit_every=5) as p:
        for t in range(3):
            p.append(k[:, :, t:t + 1], v[:, :, t:t + 1], token_ids=[t])
        # Not committed yet: another connection sees nothing; this client's next call sends first.
        assert other.stats(piped).sequence.length == 0
        assert pc.stats(piped).sequence.length == 3
        for t in range(3, STEPS):
            pc.append(inline, k[:, :, t:t + 1], v[:, :, t:t + 1], token_ids=[t])
            p.append(k[:, :, t:t + 1], v[:, :, t:t + 1], token_ids=[t])
        p.flush()
        assert other.stats(piped).sequence.length == STEPS
    pc.release(inline)
    inline = pc.create_sequence(MODEL_F16)
    pc.append(inline, k[:, :, :64], v[:, :, :64])
    for t in range(64, STEPS):
        pc.append(inline, k[:, :, t:t + 1], v[:, :, t:t + 1])
    assert_same_sequence(pc, inline, piped)
    other.close()


def test_commit_every_failure_names_the_steps_of_the_refused_commit(pc):
    seq = pc.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 12, seed=9)
    p = AppendPipeline(pc, seq, reserve_ahead=32, commit_every=4)
    for t in range(4):
        p.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
    p.flush()
    pc.release(seq)
    for t in range(4, 7):
        p.append(k[:, :, t:t + 1], v[:, :, t:t + 1])  # written, not even sent yet
    with pytest.raises(PipelineError) as e:
        p.flush()
    err = e.value
    assert (err.step, err.last_step, err.first_position, err.tokens) == (4, 6, 4, 3)
    assert "steps 4-6" in err.message and err.code == ErrorCode.NOT_FOUND
    p.close()
    with pytest.raises(KvdError) as e:
        AppendPipeline(pc, pc.create_sequence(MODEL_F16), commit_every=0)
    assert e.value.code == ErrorCode.INVALID_ARGUMENT
