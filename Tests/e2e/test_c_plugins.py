"""C-ABI plugins (kvd_plugin.h): loading from the config, Hello, compaction through score_head and
select_head checked against NumPy, and every refusal — at start-up (exit 2, file and problem named)
and at request time (INTERNAL naming the plugin, sequence unchanged, daemon still serving).

The plugins are compiled once per session with ``cc``: the examples in ``Plugins/c-example`` through
their Makefile (which is part of what is tested) and the fixtures in ``Tests/plugin-fixtures``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import (REPO, TINY, TINY_MODELS, MODEL_F16, MODEL_F32, ErrorCode, KvdError,
                      assert_sequence, bits, free_pages, make_kv)

EXAMPLES = REPO / "Plugins" / "c-example"
FIXTURES = REPO / "Tests" / "plugin-fixtures"
INCLUDE = REPO / "Sources" / "CKVDPluginABI" / "include"
CFLAGS = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror"]
P = TINY["page_tokens"]
L, H = TINY["layers"], TINY["kv_heads"]
GROUP = TINY["q_heads"] // TINY["kv_heads"]
START_EXIT_TIMEOUT_S = 20

# Methods loaded together in the "request-time" directory, with the fixtures that only fail when run.
GOOD = ["libvnorm", "libstride", "good_qdot", "good_nan_scores"]
REQUEST_BAD = ["request_select_unsorted", "request_select_out_of_range",
               "request_select_too_many", "request_score_error"]


# ---------------------------------------------------------------------------------------------
# Building and configuring

@pytest.fixture(scope="session")
def libs(tmp_path_factory) -> dict[str, Path]:
    """Every plugin compiled once: stem -> .so path (examples as libvnorm / libstride)."""
    out = tmp_path_factory.mktemp("plugin-build")
    subprocess.run(["make", "-s", "-C", str(EXAMPLES), f"OUT={out}", f"CFLAGS={' '.join(CFLAGS)}"],
                   check=True)
    for src in sorted(FIXTURES.glob("*.c")):
        subprocess.run(["cc", *CFLAGS, "-fPIC", "-shared", f"-I{INCLUDE}", "-o",
                        str(out / f"{src.stem}.so"), str(src), "-lm"], check=True)
    return {p.stem: p for p in out.glob("*.so")}


def plugin_dir(libs, tmp_path_factory, stems, name="plugins") -> Path:
    """A fresh directory holding copies of ``stems`` (a copy's path is the origin kvd reports)."""
    d = tmp_path_factory.mktemp(name)
    for s in stems:
        shutil.copy(libs[s], d / f"{s}.so")
    return d


@pytest.fixture(scope="session")
def served_dir(libs, tmp_path_factory) -> Path:
    """The examples, the good fixtures and the request-time bad fixtures, plus a file kvd ignores."""
    d = plugin_dir(libs, tmp_path_factory, GOOD + REQUEST_BAD, "served")
    (d / "README.txt").write_text("not a plugin: only *.so files are loaded\n")
    return d


def with_plugins(*dirs, policies=None):
    def mutate(cfg):
        cfg["plugins"] = {"directories": [str(d) for d in dirs]}
        if policies:
            cfg["policies"] = policies
    return mutate


@pytest.fixture
def pd(make_daemon, served_dir):
    """A daemon with ``served_dir`` loaded, and a client on it."""
    d = make_daemon(with_plugins(served_dir, policies={
        "gist": {"method": "stride", "params": {"budget": 4, "window": 2}}}))
    c = d.client()
    yield d, c
    c.close()


# ---------------------------------------------------------------------------------------------
# NumPy references

def vnorm_scores(v: np.ndarray, power: float) -> np.ndarray:
    """``[T, D]`` values -> the plugin's scores: the Lp norm, accumulated in double in C's order."""
    a = np.abs(v.astype(np.float64))
    s = np.zeros(a.shape[0])
    for i in range(a.shape[1]):
        s = s + a[:, i] ** power
    with np.errstate(invalid="ignore"):
        return (s ** (1.0 / power)).astype(np.float32)


def qdot_scores(k: np.ndarray, q_group: np.ndarray) -> np.ndarray:
    """``[T, D]`` keys, ``[group, w, D]`` queries -> sum of q . k_t over the group, in C's order."""
    kd = k.astype(np.float64)
    rows = q_group.reshape(-1, q_group.shape[-1]).astype(np.float64)
    s = np.zeros(kd.shape[0])
    with np.errstate(invalid="ignore"):
        for r in rows:
            for i in range(kd.shape[1]):
                s = s + r[i] * kd[:, i]
    return s.astype(np.float32)


def topk_keep(scores: np.ndarray, budget: int, window: int, n: int) -> np.ndarray:
    """kvd's selection: the ``budget`` best of the first ``n - window`` (NaN lowest, ties: lower
    index), ascending, then the window."""
    prefix = n - window
    assert scores.shape == (prefix,)
    s = np.where(np.isnan(scores), -np.inf, scores)
    if budget >= prefix:
        chosen = np.arange(prefix)
    else:
        chosen = np.sort(np.lexsort((np.arange(prefix), -s))[:budget])
    return np.concatenate([chosen, np.arange(prefix, n)]).astype(np.int64)


def stride_keep(n: int, window: int, budget: int, stride: int) -> np.ndarray:
    prefix = n - window
    b = min(budget, prefix)
    chosen = np.arange(0)
    if b > 0:
        k = stride if stride > 0 else -(-prefix // b)
        chosen = np.arange(0, prefix, k)[:b]
    return np.concatenate([chosen, np.arange(prefix, n)]).astype(np.int64)


def pages_for(n: int) -> int:
    return -(-n // P)


def assert_heads(c, seq, k, v, keeps: dict, positions=None) -> None:
    """Each head (l, h) holds exactly ``k/v[l, h][keeps[l, h]]`` bit for bit, with the kept original
    positions (``positions[l, h]`` maps indices to positions; default the identity)."""
    for mode in ("pages", "inline"):
        for hd in c.query(seq, mode=mode):
            keep = keeps[hd.layer, hd.head]
            what = f"{mode} ({hd.layer},{hd.head})"
            assert hd.num_tokens == len(keep), what
            assert np.array_equal(bits(hd.keys), bits(k[hd.layer, hd.head][keep])), f"{what} K"
            assert np.array_equal(bits(hd.values), bits(v[hd.layer, hd.head][keep])), f"{what} V"
            want_pos = keep if positions is None else np.asarray(positions)[keep]
            assert hd.positions.tolist() == list(want_pos), f"{what} positions"


def check_compaction(c, seq, r, T, keeps, free_before) -> None:
    """The reply's counts and the freed pages match ``keeps``."""
    assert [(h.layer, h.head, h.before, h.kept) for h in r.heads] == [
        (l, h, T, len(keeps[l, h])) for l in range(L) for h in range(H)]
    want_freed = sum(pages_for(T) - pages_for(len(kp)) for kp in keeps.values())
    assert r.pages_freed == want_freed
    assert free_pages(c) - free_before == want_freed
    st = c.stats(seq).sequence
    assert st.tokens_held == sum(len(kp) for kp in keeps.values())


def new_sequence(c, model, T, seed):
    k, v = make_kv(model, T, seed=seed)
    seq = c.create_sequence(model)
    c.append(seq, k, v)
    return seq, k, v


# ---------------------------------------------------------------------------------------------
# Hello

def test_hello_lists_plugins_with_origin_and_params(pd, served_dir):
    _, c = pd
    methods = {m.name: m for m in c.hello().methods}
    for stem, name in [("libvnorm", "vnorm"), ("libstride", "stride"), ("good_qdot", "qdot"),
                       ("request_score_error", "score_error")]:
        assert methods[name].origin == str(served_dir / f"{stem}.so")
    assert methods["knorm"].origin == "builtin"
    vn = methods["vnorm"]
    assert vn.description.startswith("Value norm")
    assert not vn.needs_queries and methods["qdot"].needs_queries
    assert [p.name for p in vn.params] == ["budget", "fraction", "window", "power"]
    power = vn.params[3]
    assert (power.type, power.default_value, power.min_value, power.max_value) == (
        "float", "2.0", "1", "64")
    stride = methods["stride"].params[3]
    assert (stride.name, stride.type, stride.default_value) == ("stride", "int", "0")
    assert [p.name for p in methods["qdot"].params] == ["budget", "fraction", "window"]
    assert {p.name for p in c.hello().policies} == {"gist"}


# ---------------------------------------------------------------------------------------------
# score_head: vnorm and the fixtures

@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("power", [2.0, 1.0, 7.5])
def test_vnorm_keeps_numpy_topk(pd, model, power):
    _, c = pd
    T, window, budget = 23, 3, 7
    seq, k, v = new_sequence(c, model, T, seed=int(power * 10) + len(model))
    free_before = free_pages(c)
    r = c.compact(seq, "vnorm", budget=budget, window=window, power=power)
    assert r.method == "vnorm" and r.generation == 2 and list(r.budgets) == [budget] * (L * H)
    keeps = {(l, h): topk_keep(vnorm_scores(v[l, h, :T - window], power), budget, window, T)
             for l in range(L) for h in range(H)}
    check_compaction(c, seq, r, T, keeps, free_before)
    assert_heads(c, seq, k, v, keeps)


def test_vnorm_power_changes_the_selection(pd):
    """The parameter really reaches the plugin: L1 and L7.5 pick different tokens here."""
    _, c = pd
    T, window, budget = 40, 4, 9
    seq1, k, v = new_sequence(c, MODEL_F32, T, seed=77)
    seq2 = c.create_sequence(MODEL_F32)
    c.append(seq2, k, v)
    keeps = {}
    for seq, power in [(seq1, 1.0), (seq2, 7.5)]:
        c.compact(seq, "vnorm", budget=budget, window=window, power=power)
        keeps[power] = {(l, h): topk_keep(vnorm_scores(v[l, h, :T - window], power), budget, window, T)
                        for l in range(L) for h in range(H)}
        assert_heads(c, seq, k, v, keeps[power])
    assert any(not np.array_equal(keeps[1.0][x], keeps[7.5][x]) for x in keeps[1.0])


def test_vnorm_parameter_range_is_enforced(pd):
    _, c = pd
    seq, k, v = new_sequence(c, MODEL_F16, 10, seed=3)
    with pytest.raises(KvdError) as e:
        c.compact(seq, "vnorm", budget=2, power=0.5)
    assert e.value.code == ErrorCode.INVALID_ARGUMENT and "power" in e.value.message
    assert_sequence(c, seq, k, v, modes=("inline",))


def test_qdot_reads_the_heads_query_group(pd):
    _, c = pd
    T, w, budget = 26, 3, 6
    seq, k, v = new_sequence(c, MODEL_F32, T, seed=11)
    q = np.random.default_rng(5).standard_normal((L, TINY["q_heads"], w, TINY["head_dim"]))
    q = q.astype(np.float32)
    free_before = free_pages(c)
    r = c.compact(seq, "qdot", queries=q, budget=budget)
    keeps = {(l, h): topk_keep(qdot_scores(k[l, h, :T - w], q[l, h * GROUP:(h + 1) * GROUP]),
                               budget, w, T)
             for l in range(L) for h in range(H)}
    check_compaction(c, seq, r, T, keeps, free_before)
    assert_heads(c, seq, k, v, keeps)


def test_qdot_without_queries_is_refused(pd):
    _, c = pd
    seq, k, v = new_sequence(c, MODEL_F16, 12, seed=4)
    with pytest.raises(KvdError) as e:
        c.compact(seq, "qdot", budget=2)
    assert e.value.code == ErrorCode.FAILED_PRECONDITION and "'qdot'" in e.value.message
    assert_sequence(c, seq, k, v, modes=("inline",))


def test_nan_scores_rank_lowest_and_positions_are_original(pd):
    _, c = pd
    T, window, budget = 30, 4, 14
    seq, k, v = new_sequence(c, MODEL_F16, T, seed=8)
    c.compact(seq, "streamingllm", sinks=2, recent=20)  # positions become [0, 1, 10..29]
    pos = np.concatenate([np.arange(2), np.arange(10, 30)])
    n = len(pos)
    r = c.compact(seq, "nan_scores", budget=budget, window=window)
    with np.errstate(invalid="ignore"):
        scores = np.where(pos[:n - window] % 3 == 0, np.nan, pos[:n - window]).astype(np.float32)
    keep = topk_keep(scores, budget, window, n)
    # 12 finite scores, so two NaN tokens are kept: the lowest indices among them (positions 0, 12).
    assert set(pos[keep[:budget]].tolist()) >= {0, 12} and 15 not in pos[keep].tolist()
    assert [h.kept for h in r.heads] == [len(keep)] * (L * H)
    assert_heads(c, seq, k[:, :, pos], v[:, :, pos], {(l, h): keep for l in range(L) for h in range(H)},
                 positions=pos)


# ---------------------------------------------------------------------------------------------
# select_head: stride

@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("budget, stride", [(7, 0), (7, 5), (0, 0), (100, 0), (3, 1)])
def test_stride_keeps_every_kth(pd, model, budget, stride):
    _, c = pd
    T, window = 23, 3
    seq, k, v = new_sequence(c, model, T, seed=budget + stride)
    free_before = free_pages(c)
    r = c.compact(seq, "stride", budget=budget, window=window, stride=stride)
    keep = stride_keep(T, window, budget, stride)
    keeps = {(l, h): keep for l in range(L) for h in range(H)}
    check_compaction(c, seq, r, T, keeps, free_before)
    assert_sequence(c, seq, k[:, :, keep], v[:, :, keep], positions=keep)


def test_stride_through_a_config_policy(pd):
    _, c = pd
    T = 17
    seq, k, v = new_sequence(c, MODEL_F16, T, seed=21)
    r = c.compact(seq, policy="gist")
    assert (r.method, r.policy) == ("stride", "gist")
    keep = stride_keep(T, 2, 4, 0)
    assert keep.tolist() == [0, 4, 8, 12, 15, 16]
    assert_sequence(c, seq, k[:, :, keep], v[:, :, keep], positions=keep)


# ---------------------------------------------------------------------------------------------
# Request-time refusals

@pytest.mark.parametrize("method, problem", [
    ("select_unsorted", "not strictly ascending (1 then 0)"),
    ("select_out_of_range", "returned index 20, outside [0, 20)"),
    ("select_too_many", "kept 8 tokens, more than the budget of 7"),
    ("score_error", "score_error: refusing layer 1 head 0 on purpose (fixture)"),
])
def test_bad_plugin_answer_leaves_sequence_unchanged(pd, served_dir, method, problem):
    _, c = pd
    T = 23
    seq, k, v = new_sequence(c, MODEL_F16, T, seed=31)
    before = c.query(seq, mode="inline")
    snapshot = [(h.positions.copy(), bits(h.keys).copy(), bits(h.values).copy()) for h in before]
    free_before = free_pages(c)
    with pytest.raises(KvdError) as e:
        c.compact(seq, method, budget=7, window=3)
    assert e.value.code == ErrorCode.INTERNAL
    assert f"'{method}'" in e.value.message and problem in e.value.message, e.value.message
    stem = next(s for s in REQUEST_BAD if s.endswith(method))
    assert str(served_dir / f"{stem}.so") in e.value.message, e.value.message

    after = c.query(seq, mode="inline")
    assert [(h.positions.tolist(), bits(h.keys).tolist(), bits(h.values).tolist()) for h in after] == [
        (p.tolist(), kb.tolist(), vb.tolist()) for p, kb, vb in snapshot]
    assert c.stats(seq).sequence.generation == 1 and free_pages(c) == free_before
    assert_sequence(c, seq, k, v)
    # The daemon keeps serving, the same sequence included.
    r = c.compact(seq, "stride", budget=5, window=3)
    assert [h.kept for h in r.heads] == [8] * (L * H)


# ---------------------------------------------------------------------------------------------
# Start-up refusals

def start_fails(make_daemon, *dirs) -> str:
    """Starts kvd on ``dirs``; asserts it exits 2 and returns its stderr."""
    d = make_daemon(with_plugins(*dirs), start=False)
    d.start(wait=False)
    rc = d.proc.wait(START_EXIT_TIMEOUT_S)
    d.returncode = rc
    err = d.stderr()
    assert rc == 2, f"kvd exited {rc}, expected 2:\n{err}"
    assert "configuration error" in err and "plugins.directories" in err, err
    return err


@pytest.mark.parametrize("stem, problem", [
    ("startup_abi_major", "ABI major 2, this kvd speaks 1; rebuild against kvd_plugin.h"),
    ("startup_missing_entry", "no symbol kvd_plugin_entry"),
    ("startup_null_table", "kvd_plugin_entry returned NULL"),
    ("startup_small_struct", "table struct_size is 64 bytes, this kvd reads 88; rebuild against kvd_plugin.h"),
    ("startup_no_callbacks", "plugin 'no_callbacks' sets neither score_head nor select_head; set exactly one"),
    ("startup_both_callbacks", "plugin 'both_callbacks' sets both score_head and select_head"),
    ("startup_bad_name", "plugin name 'Bad-Name' is not [a-z0-9_]+"),
    ("startup_bad_param", "plugin 'bad_param' parameter 0 'mystery': type 9 is not KVD_PARAM_INT"),
])
def test_bad_plugin_stops_startup(make_daemon, libs, tmp_path_factory, stem, problem):
    # Good plugins sorted before it load first; the bad one still stops start-up.
    d = plugin_dir(libs, tmp_path_factory, ["libvnorm", stem])
    err = start_fails(make_daemon, d)
    assert f"{d / stem}.so: {problem}" in err, err
    if stem == "startup_null_table":
        assert "null_table: refusing to load on purpose (fixture)" in err, "the plugin's log line"


def test_missing_directory_stops_startup(make_daemon, tmp_path):
    missing = tmp_path / "no-such-plugins"
    err = start_fails(make_daemon, missing)
    assert f"plugin directory {missing} does not exist" in err, err


def test_name_clash_stops_startup(make_daemon, libs, tmp_path_factory):
    d = plugin_dir(libs, tmp_path_factory, ["libvnorm"])
    shutil.copy(libs["libvnorm"], d / "zz_copy.so")
    err = start_fails(make_daemon, d)
    assert f"method 'vnorm' from {d}/zz_copy.so clashes with the one from {d}/libvnorm.so" in err, err


def test_several_directories_load_in_order(make_daemon, libs, tmp_path_factory):
    a = plugin_dir(libs, tmp_path_factory, ["libvnorm"], "a")
    b = plugin_dir(libs, tmp_path_factory, ["libstride"], "b")
    dmn = make_daemon(with_plugins(a, b))
    with dmn.client() as c:
        origins = {m.name: m.origin for m in c.hello().methods}
    assert origins["vnorm"] == str(a / "libvnorm.so") and origins["stride"] == str(b / "libstride.so")
    assert "loaded plugin method 'vnorm'" in dmn.stderr()


def test_destroy_runs_once_at_shutdown(make_daemon, libs, tmp_path_factory):
    d = plugin_dir(libs, tmp_path_factory, ["good_nan_scores"])
    dmn = make_daemon(with_plugins(d))
    with dmn.client() as c:
        seq, _, _ = new_sequence(c, MODEL_F16, 12, seed=2)
        c.compact(seq, "nan_scores", budget=3, window=2)
        assert "destroy called" not in dmn.stderr()
    assert dmn.stop() == 0
    assert dmn.stderr().count("plugin: good_nan_scores.so: nan_scores: destroy called") == 1, dmn.stderr()  # attributed to its file
