"""HeadKV calibration that generalises (no model needed, only torch): the capture scoring against
an independent NumPy computation (incl. Gemma-3's scaling, grouped heads and sliding-window mask),
the retrieval/reasoning needle generators and the held-apart dev set (deterministic, answer in the
fact, the M–Z entity rule, nothing shared with the calibration), the question plan's cycling, the
corpora's split, the scores file format (per question and per template) and the Wilson helper."""

from __future__ import annotations

import math
import random
import string

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kvd_transformers.calibrate import capture, devset, headkv, needles, texts  # noqa: E402
from kvd_transformers.calibrate.wilson import wilson  # noqa: E402

M_TO_Z = set(string.ascii_uppercase[12:])


def np_step_probs(q, k, scaling, window=None):
    """Independent reference: q [Hq, D], k [Hkv, S, D]; query head h uses KV head h // g; the query
    is position S-1 and, with a window W, sees positions p with (S-1) - p < W."""
    hq, s = q.shape[0], k.shape[1]
    g = hq // k.shape[0]
    out = np.zeros((hq, s))
    for h in range(hq):
        logits = (k[h // g] @ q[h]) * scaling
        if window is not None:
            logits = np.where((s - 1) - np.arange(s) < window, logits, -np.inf)
        e = np.exp(logits - logits.max())
        out[h] = e / e.sum()
    return out


@pytest.mark.parametrize("hq,hkv,d,s,window,scaling", [
    (9, 3, 16, 40, None, 16 ** -0.5),       # SmolLM2-like grouping
    (4, 1, 32, 40, 8, 256 ** -0.5),         # Gemma-3-like: 1 KV head, query_pre_attn_scalar
    (4, 1, 32, 7, 8, 0.2),                  # window longer than the cache: nothing masked
])
def test_step_probs_matches_numpy(hq, hkv, d, s, window, scaling):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((hq, d)).astype(np.float32)
    k = rng.standard_normal((hkv, s, d)).astype(np.float32)
    got = capture.step_probs(torch.from_numpy(q).reshape(1, hq, 1, d),
                             torch.from_numpy(k).unsqueeze(0), scaling, window).numpy()
    want = np_step_probs(q.astype(np.float64), k.astype(np.float64), scaling, window)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    if window is not None and s > window:
        assert not got[:, :s - window].any() and (got[:, s - window:] > 0).all()


class FakeModule:
    layer_idx = 1


def test_scoring_attention_sliding_scores_and_output():
    """The decode step's output and recorded scores under a sliding window equal NumPy's: the
    needle (positions 2..5) lies before the window, so the sliding layer scores 0 there, while
    the same call without a window scores it."""
    hq, hkv, d, s, w = 4, 1, 8, 20, 6
    rng = np.random.default_rng(3)
    q = rng.standard_normal((hq, d))
    k = rng.standard_normal((hkv, s, d))
    v = rng.standard_normal((hkv, s, d))
    k[0, 2:6] = q[0] * 3          # make the needle attractive to head 0
    tq = torch.tensor(q, dtype=torch.float32).reshape(1, hq, 1, d)
    tk = torch.tensor(k, dtype=torch.float32).unsqueeze(0)
    tv = torch.tensor(v, dtype=torch.float32).unsqueeze(0)
    start, end = 2, 6
    for window in (w, None):
        rec = capture.NeedleRecorder(2, hq, start, end)
        capture.set_recorder(rec)
        try:
            out, _ = capture.scoring_attention(FakeModule(), tq, tk, tv, None, scaling=0.5,
                                               sliding_window=window)
        finally:
            capture.set_recorder(None)
        probs = np_step_probs(q, k, 0.5, window)
        want_out = np.stack([probs[h] @ v[0] for h in range(hq)])
        np.testing.assert_allclose(out[0, 0].numpy(), want_out, rtol=1e-4, atol=1e-6)
        n = end - start
        top = np.argsort(-probs, axis=-1)[:, :n]
        vals = np.take_along_axis(probs, top, -1)
        want = (vals * ((top >= start) & (top < end))).sum(-1) / n
        np.testing.assert_allclose(rec.current[1].numpy(), want, rtol=1e-5, atol=1e-9)
        assert not rec.current[0].any()
        if window is not None:
            assert not rec.current[1].any()
        else:
            assert rec.current[1][0] > 0.1


def test_decode_cache_keeps_sliding_layers_whole():
    from transformers import DynamicCache

    class Cfg:
        layer_types = ["sliding_attention", "full_attention"]

    c = headkv.decode_cache(Cfg())
    assert isinstance(c, DynamicCache)
    assert not any("Sliding" in type(layer).__name__ for layer in getattr(c, "layers", []))


def all_needles(make, seeds=range(300)):
    return [make(random.Random(s)) for s in seeds]


@pytest.mark.parametrize("task", ["retrieval", "reasoning"])
def test_task_generators_deterministic_and_answer_in_fact(task):
    make = needles.TASKS[task]
    a, b = all_needles(make), all_needles(make)
    assert a == b
    assert {n.task for n in a} == {task}
    assert len({n.template for n in a}) == 5          # every template comes up
    for n in a:
        assert n.answer in n.fact and n.answer not in n.question
        assert needles.is_correct(n, n.fact) or n.kind == "number" or n.task == "reasoning"
        # the model's usual sentence answer is accepted, a wrong one is not
        assert needles.is_correct(n, f"The answer is {n.answer}.")
        assert not needles.is_correct(n, "The answer is 31337 Quux.")


def test_retrieval_kinds_cover_numbers_places_objects_names():
    templates = {n.template: n for n in all_needles(needles.make_retrieval)}
    assert set(templates) == {"object-place", "event-city", "extension", "role-name", "price"}
    assert {n.kind for n in templates.values()} == {"number", "text"}


def test_entity_letter_rule_and_disjoint_sets():
    new = needles.RETRIEVAL_ENTITIES + devset.DEV_ENTITIES
    assert all(e[0].upper() in M_TO_Z for e in new), [e for e in new if e[0].upper() not in M_TO_Z]
    old = set(needles.NAMES + needles.COLORS + needles.PETS + needles.CITIES)
    calib = set(needles.RETRIEVAL_ENTITIES) | old
    assert not calib & set(devset.DEV_ENTITIES)          # held-out entities
    # held-out templates: no dev template is a calibration template
    calib_templates = {n.template for t in needles.TASKS.values() for n in all_needles(t)}
    assert not calib_templates & set(devset.TEMPLATES)
    # every answer of a retrieval needle is one of the new M-Z entities (or a number)
    for n in all_needles(needles.make_retrieval):
        assert n.kind == "number" or n.answer[0].upper() in M_TO_Z


def test_dev_items_deterministic_cover_templates_and_answerable():
    a, b = devset.dev_items(30), devset.dev_items(30)
    assert a == b and len(a) == 30
    assert {it.needle.template for it in a} == set(devset.TEMPLATES)
    assert {it.needle.task for it in a} == {"retrieval", "reasoning"}
    assert len({it.depth for it in a}) == 5
    assert min(it.seed for it in a) >= devset.SEED_BASE
    for it in a:
        assert it.needle.answer in it.needle.fact
        assert needles.is_correct(it.needle, f"It is {it.needle.answer}.")


def test_corpora_split():
    assert not set(texts.CALIB_MODULES) & set(texts.DEV_MODULES)
    for name in ("transformers", "torch"):
        assert not any(m.startswith(name) for m in texts.CALIB_MODULES + texts.DEV_MODULES)
    calib, dev = texts.paragraphs(0, "stdlib"), texts.paragraphs(0, "dev")
    assert len(calib) > 300 and len(dev) > 150
    assert not set(calib) & set(dev)
    assert texts.paragraphs(5, "stdlib") == texts.paragraphs(5, "stdlib")
    assert not any("GNU GENERAL PUBLIC LICENSE" in p for p in calib + dev)
    with pytest.raises(ValueError):
        texts.paragraphs(0, "licenses")


def test_question_plan_cycles_every_combination():
    args = headkv.parse_args(["--out", "x.json", "--tasks", "retrieval,reasoning",
                              "--corpora", "pydoc,stdlib", "--lengths", "256,512",
                              "--depths", "0.2,0.8"])
    plans = [headkv.question_plan(args, i) for i in range(16)]
    combos = {(p[0].task, p[4], p[1], p[2]) for p in plans}
    assert len(combos) == 16
    assert plans[3][0] == headkv.question_plan(args, 3)[0]
    # one task, one corpus: the first calibration's plan (lengths fastest, then depths)
    old = headkv.parse_args(["--out", "x.json"])
    assert [headkv.question_plan(old, i)[1:3] for i in range(4)] == \
        [(256, 0.1), (512, 0.1), (1024, 0.1), (256, 0.3)]
    assert headkv.question_plan(old, 0)[0] == needles.make_needle(random.Random(0))


@pytest.mark.parametrize("bad", [["--tasks", "reading"], ["--corpora", "dev"],
                                 ["--corpora", ""], ["--tasks", ","]])
def test_bad_tasks_and_corpora_rejected(bad, capsys):
    with pytest.raises(SystemExit) as e:
        headkv.parse_args(["--out", "x.json"] + bad)
    assert e.value.code == 2 and ("--tasks" in capsys.readouterr().err or True)


def test_scores_file_format_per_question_and_per_template():
    layers, hq = 2, 4
    rng = np.random.default_rng(0)
    mats = [rng.random((layers, hq)).round(6).tolist() for _ in range(3)]
    state = {"kept": mats, "answers": [
        {"correct": True, "template": "price"}, {"correct": False, "template": "price"},
        {"correct": True, "template": "price"}, {"correct": True, "template": "same-city"}]}
    q = headkv.head_table(state, layers, hq)
    assert sorted(q) == sorted(f"{l}-{h}" for l in range(layers) for h in range(hq))
    assert all(len(v) == 3 for v in q.values())
    assert q["1-2"] == [round(m[1][2], 8) for m in mats]
    t = headkv.head_table(state, layers, hq, weighting="task")
    assert all(len(v) == 2 for v in t.values())            # two templates
    # sorted by name: "price" (mean of the 1st and 2nd kept) then "same-city" (the 3rd)
    np.testing.assert_allclose(t["0-3"], [(mats[0][0][3] + mats[1][0][3]) / 2, mats[2][0][3]],
                               atol=1e-8)
    kv = headkv.head_table(state, layers, hq, per_kv=1, weighting="task")
    assert sorted(kv) == ["0-0", "1-0"]
    np.testing.assert_allclose(kv["1-0"][1], np.mean(mats[2][1]), atol=1e-8)


def test_wilson_matches_formula():
    for k, n in [(5, 12), (0, 20), (20, 20), (13, 30)]:
        p, z = k / n, 1.959963984540054
        c = (p + z * z / (2 * n)) / (1 + z * z / n)
        h = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = wilson(k, n, z)
        assert math.isclose(lo, max(0, c - h), abs_tol=1e-12)
        assert math.isclose(hi, min(1, c + h), abs_tol=1e-12)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(5, 12)
    assert 0.19 < lo < 0.20 and 0.68 < hi < 0.69


def test_plain_prompt_for_a_base_model():
    from kvd_transformers.calibrate.prompts import wrap

    class NoTemplate:
        chat_template = None

    assert wrap(NoTemplate(), "text", "Where?") == "text\n\nQuestion: Where?\nAnswer:"


def test_resume_with_fewer_questions_than_answered_is_refused(tmp_path, capsys):
    from kvd_transformers.calibrate import checkpoint

    out = tmp_path / "s.json"
    argv = ["--out", str(out), "--tasks", "retrieval,reasoning", "--questions", "3", "--resume"]
    args = headkv.parse_args(argv)
    settings = {"tool": "headkv", "model": "smollm2", "questions": 160,
                "tasks": args.tasks, "corpora": args.corpora, "lengths": args.lengths,
                "depths": args.depths, "seed": 0, "max_new_tokens": 16, "scoring": "answer-steps"}
    checkpoint.save(checkpoint.checkpoint_path(out), settings,
                    {"next": 5, "kept": [], "answers": []})
    assert headkv.main(argv) == headkv.EXIT_USAGE           # refused before any model load
    assert "answered 5 questions" in capsys.readouterr().err
    # other settings still have to match
    assert headkv.main(argv[:-3] + ["--questions", "9", "--resume", "--seed", "2"]) == \
        headkv.EXIT_USAGE
    assert "seed" in capsys.readouterr().err


def test_capture_decoding_equals_sdpa_on_a_tiny_gemma3():
    """A random 3-layer Gemma-3 (sliding window 8, 4 query heads on 1 KV head, scaling from
    query_pre_attn_scalar): prefill + one-token steps through the scoring attention (as the
    calibration decodes) give the logits of a plain SDPA forward over the whole sequence, and the
    sliding layers score nothing in a needle that left their window."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    name = capture.register()
    assert name in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
                           layer_types=["sliding_attention", "sliding_attention",
                                        "full_attention"], max_position_embeddings=128)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32,
                                             attn_implementation="sdpa").eval()
    ids = torch.randint(0, 64, (1, 30))
    with torch.no_grad():
        want = model(ids).logits[0, 19:]                 # logits at positions 19..29
        model.set_attn_implementation(name)
        cache = headkv.decode_cache(model.config)
        got = [model(ids[:, :20], cache=cache, use_cache=True).logits[0, -1]]
        rec = capture.NeedleRecorder(3, 4, 2, 6)        # needle at positions 2..5
        capture.set_recorder(rec)
        try:
            for t in range(20, 30):
                got.append(model(ids[:, t:t + 1], cache=cache, use_cache=True).logits[0, -1])
                rec.end_step()
        finally:
            capture.set_recorder(None)
            model.set_attn_implementation("sdpa")
    np.testing.assert_allclose(torch.stack(got).numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    steps = torch.stack(rec.steps)                      # [10, layers, q_heads]
    assert not steps[:, :2].any()                       # sliding layers: needle out of window
    assert steps[:, 2].sum() > 0                        # the full layer sees it
