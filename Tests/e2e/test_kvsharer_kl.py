"""KVSharer calibration with a KL budget (kvd_transformers.calibrate.kl / greedy / kvsharer):

* the KL formula against a hand-written NumPy KL (and one value worked out by hand);
* the greedy walk against an independent walk written here, on synthetic per-map KL numbers
  (acceptance of the whole map's KL, chains, skips, caps, a stopped walk resumed);
* the real model: the fast KL of :class:`kl.Reference` (forwards starting at the lowest aliased
  layer, full distributions cached) against NumPy on logits of whole forwards, and its early give-up;
* a real calibration run (3 texts × 32 tokens, budget 0.3, S = 1) against a real daemon: the map's
  recorded KL is the NumPy KL of the model's logits, kvd's kvsharer compaction applies the map,
  a stopped run resumes to the same file, other settings refuse to resume, a tighter stop rule
  (--shares) may resume; a budget of 0 accepts nothing and writes nothing.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from real_model_gate import require  # noqa: E402

require("kvsharer KL test")

import torch  # noqa: E402

from conftest import SMOLLM2_F32, smollm2_daemon  # noqa: E402
from kvd_transformers import load_smollm2  # noqa: E402
from kvd_transformers.calibrate import checkpoint, greedy, kl, kvsharer, sharing  # noqa: E402
from kvd_transformers.calibrate.texts import calibration_ids  # noqa: E402

L, H, D = 30, 3, 64


def numpy_kl(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) ‖ softmax(logits)) over the last axis: Σ p (log p − log q), float64."""
    def log_softmax(x):
        x = np.asarray(x, dtype=np.float64)
        m = x.max(-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    lp, lq = log_softmax(ref_logits), log_softmax(logits)
    return (np.exp(lp) * (lp - lq)).sum(-1)


# ---------------------------------------------------------------------------------------------
# The KL formula

def test_kl_matches_numpy_and_a_hand_value():
    # p = (1/2, 1/2), q = (0.9, 0.1): KL = ½ ln(0.5/0.9) + ½ ln(0.5/0.1) = 0.510825...
    p, q = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.9, 0.1]]))
    assert float(kl.kl_per_position(p, q)[0]) == pytest.approx(0.5 * np.log(5 / 9) + 0.5 * np.log(5),
                                                                abs=1e-7)
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 5, 300)) * 3
    b = a + rng.standard_normal((2, 5, 300)) * 0.5
    got = kl.kl_per_position(torch.tensor(a, dtype=torch.float32),
                             torch.tensor(b, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, numpy_kl(a.astype(np.float32), b.astype(np.float32)),
                               rtol=1e-6, atol=1e-9)
    # KL is not symmetric, and 0 for the same distribution (logits shifted by a constant)
    back = kl.kl_per_position(torch.tensor(b), torch.tensor(a)).numpy()
    assert not np.allclose(back, got, rtol=1e-2)
    assert np.all(kl.kl_per_position(torch.tensor(a), torch.tensor(a + 4.0)).numpy() < 1e-12)


# ---------------------------------------------------------------------------------------------
# The greedy walk on synthetic numbers

class Synthetic:
    """KL of a map = (Σ cost[layer, owner]) · (1 + 0.2 · (aliases − 1)): sharing more layers costs
    more than the sum of the parts. Cosine = 1 − KL. Counts the calls."""

    def __init__(self, seed=0, layers=8):
        self.cost = np.random.default_rng(seed).uniform(0.005, 0.08, (layers, layers))
        self.calls = []

    def kl(self, amap):
        if not amap:
            return 0.0
        return float(sum(self.cost[l, o] for l, o in amap.items()) * (1 + 0.2 * (len(amap) - 1)))

    def __call__(self, amap, give_up_above=None):
        self.calls.append(dict(amap))
        v = self.kl(amap)
        return kl.Measurement(kl=v, cosine=1 - v)


def ranking_of(layers=8, seed=1):
    pairs = [(i, j) for i in range(1, layers) for j in range(i)]
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [[pairs[k][0], pairs[k][1], float(100 - n)] for n, k in enumerate(order)]


def reference_walk(ranking, kl_of, budget, shares=0, max_checks=0):
    """The KL-budget greedy written independently: follow owners by hand, accept if the whole
    candidate map's KL is within the budget. Returns (map, [(i, j, accepted)])."""
    owner, log = {}, []
    for i, j, _ in ranking:
        if (shares and len(owner) >= shares) or (max_checks and len(log) >= max_checks):
            break
        if i in owner:
            continue
        root = j
        while root in owner:
            root = owner[root]
        cand = {l: (root if o == i else o) for l, o in owner.items()}
        cand[i] = root
        ok = kl_of(cand) <= budget
        log.append((i, j, ok))
        if ok:
            owner = cand
    return owner, log


@pytest.mark.parametrize("budget", [0.03, 0.08, 0.2])
def test_greedy_kl_budget_matches_reference(budget):
    ranking, syn = ranking_of(), Synthetic()
    want, want_log = reference_walk(ranking, syn.kl, budget)
    state = greedy.new_state()
    assert greedy.walk(ranking, state, syn, mode="kl", kl_budget=budget, threshold=0.5) == greedy.DONE
    assert greedy.aliases_of(state) == want
    assert [(t["layer"], t["owner"], t["accepted"]) for t in state["tried"]] == want_log
    assert syn.kl(want) <= budget
    # every accepted record: its map's KL, its KL alone, the marginal over the map before it
    before = 0.0
    for t in state["tried"]:
        if t["accepted"]:
            assert t["alone_kl"] == pytest.approx(syn.kl({t["layer"]: t["owner"]}))
            assert t["marginal_kl"] == pytest.approx(t["kl"] - before)
            before = t["kl"]
    assert before == pytest.approx(syn.kl(want))
    # a larger budget never accepts fewer aliases here, and 0.2 accepts a chain (several layers)
    if budget == 0.2:
        assert len(want) >= 3


def test_greedy_caps_cosine_and_resume():
    ranking = ranking_of()
    # S = 2 stops at two aliases; K = 5 stops after five checks
    state = greedy.new_state()
    greedy.walk(ranking, state, Synthetic(), mode="kl", kl_budget=0.2, threshold=0, shares=2)
    assert len(state["aliases"]) == 2
    want, log = reference_walk(ranking, Synthetic().kl, 0.2, shares=2)
    assert greedy.aliases_of(state) == want and len(state["tried"]) == len(log)
    state = greedy.new_state()
    greedy.walk(ranking, state, Synthetic(), mode="kl", kl_budget=0.2, threshold=0, max_checks=5)
    assert len(state["tried"]) == 5
    # the paper's test: cosine = 1 − KL >= 0.92 is KL <= 0.08
    state = greedy.new_state()
    greedy.walk(ranking, state, Synthetic(), mode="cosine", kl_budget=0.0, threshold=0.92)
    assert greedy.aliases_of(state) == reference_walk(ranking, Synthetic().kl, 0.08)[0]
    # stopped after 3 checks and resumed: the same walk as one run
    state = greedy.new_state()
    assert greedy.walk(ranking, state, Synthetic(), mode="kl", kl_budget=0.08, threshold=0,
                       stop_after=3) == greedy.STOPPED
    assert len(state["tried"]) == 3
    state = json.loads(json.dumps(state))  # as a checkpoint keeps it
    greedy.walk(ranking, state, Synthetic(), mode="kl", kl_budget=0.08, threshold=0)
    assert greedy.aliases_of(state) == reference_walk(ranking, Synthetic().kl, 0.08)[0]


def test_greedy_never_accepts_a_partial_measurement():
    def gives_up(amap, give_up_above=None):
        return kl.Measurement(kl=0.01, cosine=1.0, partial=True)
    state = greedy.new_state()
    greedy.walk(ranking_of(), state, gives_up, mode="kl", kl_budget=0.05, threshold=0, max_checks=4)
    assert state["aliases"] == {} and all(t["partial"] for t in state["tried"])


def test_committed_maps_replay_in_order():
    """The curve tool's prefixes of the committed maps: in accepted order, chains resolved, the last
    one the file's map line; labelled by the acceptance test that made them."""
    from conftest import REPO
    from kvd_transformers.calibrate.kvsharer_curve import label_of, prefixes

    cosine = REPO / "Config" / "kvsharer" / "smollm2-135m.map"
    steps = prefixes(cosine)
    assert [a for a, _ in steps] == ["27:11", "28:27", "19:11", "11:9"]
    assert steps[1][1] == {27: 11, 28: 11}                    # 28 -> 27 follows 27 to 11
    assert steps[-1][1] == {28: 9, 27: 9, 19: 9, 11: 9}       # 11 -> 9 takes 27, 28, 19 along
    assert kvsharer.read_map(cosine) == "28:9,27:9,19:9,11:9"
    assert label_of(cosine) == "cosine >= 0.5 (paper)"
    kl_map = REPO / "Config" / "kvsharer" / "smollm2-135m-kl05.map"
    assert prefixes(kl_map) == [("25:13", {25: 13})] and kvsharer.read_map(kl_map) == "25:13"
    assert label_of(kl_map) == "KL budget 0.05 (kvd)"


# ---------------------------------------------------------------------------------------------
# The real model

@pytest.fixture(scope="module")
def smollm2():
    t0 = time.monotonic()
    model, tok = load_smollm2(attn_implementation=sharing.register())
    print(f"\n[kvsharer-kl] SmolLM2 loaded in {time.monotonic() - t0:.1f} s")
    return model, tok


@pytest.fixture(scope="module")
def daemon(kvd_bin):
    yield from smollm2_daemon("kvd-kvsharer-kl-", arena="64MiB", staging="4MiB",
                              max_message="16MiB", max_tokens=256)


def whole_logits(model, ids, aliases):
    return kl.whole_forward(model, ids, aliases)[0].numpy()


def test_reference_kl_matches_numpy(smollm2):
    model, tok = smollm2
    ids = torch.tensor(calibration_ids(tok, 3, 32, 0))
    ref = kl.Reference(model, ids, batch=2)
    assert ref.skip  # SmolLM2 is Llama-shaped: candidates start at their lowest aliased layer
    full = whole_logits(model, ids, {})
    # one alias high up; a chain whose owner (3) lies below the start layer (20), so the owner's
    # K/V come from the full pass
    for amap in ({27: 11}, {20: 3, 25: 20}):
        amap = sharing.resolve(amap)
        per_pos = numpy_kl(full, whole_logits(model, ids, amap))     # [texts, tokens]
        m = ref.measure(amap)
        assert m.kl == pytest.approx(per_pos.mean(), rel=1e-4, abs=1e-6), amap
        np.testing.assert_allclose(m.kl_per_text, per_pos.mean(-1), rtol=1e-4, atol=1e-6)
        assert m.kl > 1e-3 and not m.partial
        # give up once the texts seen put the mean over the limit: a lower bound over it
        low = ref.measure(amap, give_up_above=m.kl / 10)
        assert low.partial and m.kl / 10 < low.kl <= m.kl + 1e-9
        assert len(low.kl_per_text) == 2  # the first batch of 2 texts was enough
        assert not ref.measure(amap, give_up_above=m.kl * 1.01).partial
    assert ref.measure({}).kl < 1e-9


def test_calibration_kl_map_applied_by_kvd(smollm2, daemon, tmp_path, capsys):
    model, tok = smollm2
    out = tmp_path / "kl.map"
    args = ["--endpoint", daemon.endpoint, "--out", str(out), "--texts", "3", "--tokens", "32",
            "--kl-budget", "0.3", "--shares", "1"]
    t0 = time.monotonic()
    rc = kvsharer.main(args, loaded=(model, tok))
    cap = capsys.readouterr()
    print(f"[kvsharer-kl] 3x32 budget 0.3 S=1: rc {rc} in {time.monotonic() - t0:.1f} s")
    assert rc == 0, cap.err[-2000:]
    text = out.read_text()
    assert "# acceptance: kl" in text
    alias_map = kvsharer.read_map(out)
    pairs = [tuple(map(int, p.split(":"))) for p in alias_map.split(",")]
    assert len(pairs) == 1 and pairs[0][0] > pairs[0][1] >= 0
    assert kvsharer.accepted_order(out) == pairs

    # the recorded KL (alone = the map's, it is the first alias) is NumPy's on the model's logits
    ids = torch.tensor(calibration_ids(tok, 3, 32, 0))
    want = numpy_kl(whole_logits(model, ids, {}), whole_logits(model, ids, dict(pairs))).mean()
    alone = float(re.search(r"alone KL=([0-9.]+)", text).group(1))
    whole = float(re.search(r"whole map: KL ([0-9.]+)", text).group(1))
    assert alone == pytest.approx(want, abs=1e-4) and whole == pytest.approx(want, abs=1e-4)
    assert 0 < want <= 0.3

    c = daemon.client(timeout_ms=30000)
    try:
        assert c.stats().sequences == 0  # the calibration sequences were released
        rng = np.random.default_rng(3)
        seq = c.create_sequence(SMOLLM2_F32)
        c.append(seq, rng.standard_normal((L, H, 48, D)).astype(np.float32),
                 rng.standard_normal((L, H, 48, D)).astype(np.float32))
        resp = c.compact(seq, "kvsharer", alias_map=alias_map)
        assert sorted((a.layer, a.owner) for a in resp.aliases) == pairs
        assert c.stats(seq).sequence.aliased_layers == 1
        c.release(seq)
    finally:
        c.close()

    # stopped after one check, resumed: the same file; other settings refuse the checkpoint
    part = tmp_path / "part.map"
    big = ["--endpoint", daemon.endpoint, "--out", str(part), "--texts", "3", "--tokens", "32",
           "--kl-budget", "0.5", "--shares", "2"]
    assert kvsharer.main(big + ["--stop-after", "1"], loaded=(model, tok)) == kvsharer.EXIT_STOPPED
    ck = checkpoint.checkpoint_path(part)
    saved = json.loads(ck.read_text())["state"]
    assert len(saved["tried"]) == 1 and saved["tried"][0]["accepted"]
    other = [a if a != "0.5" else "0.4" for a in big]
    assert kvsharer.main(other + ["--resume"], loaded=(model, tok)) == kvsharer.EXIT_USAGE
    assert "kl_budget" in capsys.readouterr().err and ck.exists()
    # a stop rule may tighten on resume (the walk is deterministic): S = 1 ends with the 1 accepted
    capped = tmp_path / "capped.map"
    checkpoint.checkpoint_path(capped).write_text(ck.read_text())
    capped_args = [a if a != str(part) else str(capped) for a in big]
    capped_args[capped_args.index("--shares") + 1] = "1"
    assert kvsharer.main(capped_args + ["--resume"], loaded=(model, tok)) == 0
    assert kvsharer.accepted_order(capped) == [(saved["tried"][0]["layer"],
                                                saved["tried"][0]["owner"])]
    assert "--shares 1" in capped.read_text()
    assert kvsharer.main(big + ["--resume"], loaded=(model, tok)) == 0
    fresh = tmp_path / "fresh.map"
    assert kvsharer.main([a if a != str(part) else str(fresh) for a in big],
                         loaded=(model, tok)) == 0
    assert kvsharer.read_map(part) == kvsharer.read_map(fresh)
    assert len(kvsharer.read_map(part).split(",")) == 2 and not ck.exists()

    # a budget of 0 accepts nothing: exit 3, no map, no checkpoint
    none = tmp_path / "none.map"
    rc = kvsharer.main(["--endpoint", daemon.endpoint, "--out", str(none), "--texts", "3",
                        "--tokens", "32", "--kl-budget", "0", "--max-checks", "3"],
                       loaded=(model, tok))
    assert rc == kvsharer.EXIT_NONE and "no layer pair met" in capsys.readouterr().err
    assert not none.exists() and not checkpoint.checkpoint_path(none).exists()
