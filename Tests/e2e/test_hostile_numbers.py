"""A client-supplied number never traps, and client-named files stay inside files.directories.

Every number that comes off the wire (shapes, counts, offsets, token counts, ids, layer lists,
compaction parameters, observation queries) or out of a client-named file is range-checked: a
hostile value gets a clear error naming the field, the daemon keeps serving, and a *witness*
sequence of another client stays bit-exact. Requests are built by hand with the ``kvd.v1``
modules where the Python client would refuse to send them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time

import numpy as np
import pytest

from conftest import (DTYPES, MODEL_BF16, MODEL_F16, MODEL_F32, TINY, Witness, make_kv,
                      parse_response, raw_roundtrip, sequence_snapshot, to_yaml)
from kvd import ErrorCode, KvdError
from kvd.v1 import append_pb2, common_pb2, compact_pb2, envelope_pb2, query_pb2

E = ErrorCode
L, H, HQ, D = TINY["layers"], TINY["kv_heads"], TINY["q_heads"], TINY["head_dim"]
U32_MAX, U64_MAX, I64_MAX, I64_MIN = 2**32 - 1, 2**64 - 1, 2**63 - 1, -2**63
_ids = itertools.count(1_000_000)


def raw_call(daemon, kind: str, body) -> envelope_pb2.Response:
    """Send ``Request{<kind>: body}`` on a fresh DEALER socket; returns the decoded Response."""
    req = envelope_pb2.Request(request_id=next(_ids), protocol_version=1)
    getattr(req, kind).CopyFrom(body)
    return parse_response(raw_roundtrip(daemon.endpoint, [req.SerializeToString()])[-1])


def assert_refused(resp, code, *words) -> str:
    """``resp`` is an error with ``code`` whose message names every one of ``words``."""
    assert resp.WhichOneof("body") == "error", f"expected {code.name}, got {resp}"
    assert resp.error.code == code, f"expected {code.name}, got {resp.error}"
    msg = resp.error.message
    assert msg.startswith("kvd: "), msg
    for w in words:
        assert w in msg, f"error message does not name {w!r}: {msg}"
    return msg


def expect(code, fn, *args, **kw) -> str:
    with pytest.raises(KvdError) as ei:
        fn(*args, **kw)
    assert ei.value.code == code, f"expected {code.name}, got {ei.value}"
    assert ei.value.message.startswith("kvd: "), ei.value.message
    return ei.value.message


def param(name, value) -> common_pb2.Param:
    p = common_pb2.Param(name=name)
    if isinstance(value, bool):
        p.bool_value = value
    elif isinstance(value, int):
        p.int_value = value
    elif isinstance(value, float):
        p.float_value = value
    else:
        p.string_value = value
    return p


def compact_request(seq, method, **params) -> compact_pb2.CompactRequest:
    req = compact_pb2.CompactRequest(sequence_id=seq, method=method)
    req.params.extend(param(k, v) for k, v in params.items())
    return req


def filled(c, model=MODEL_F16, tokens=12, seed=3) -> int:
    seq = c.create_sequence(model)
    c.append(seq, *make_kv(model, tokens, seed=seed))
    return seq


def queries(model=MODEL_F16, w=4, seed=0, dtype=None):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((L, HQ, w, D)).astype(dtype or DTYPES[model])


def assert_alive_and_unchanged(c, seq, before, witness) -> None:
    """The refused request changed nothing, the sequence still works, the witness is bit-exact."""
    assert sequence_snapshot(c, seq) == before, "a refused request changed the sequence"
    witness.check()


# ---------------------------------------------------------------------------------------------
# Finding 1: one request killed the daemon (queries_shm.offset + bytes overflowed uint64)

@pytest.mark.parametrize("where", ["2^64-16", "2^64-1", "2^63", "straddles-end", "before-buffer"])
def test_queries_shm_offset_out_of_range(kvd, client, witness, where):
    seq = filled(client)
    staged = client.stage(seq, 4096)
    need = L * HQ * 1 * D * 2  # f16, window 1
    offset = {"2^64-16": U64_MAX - 15, "2^64-1": U64_MAX, "2^63": 2**63,
              "straddles-end": staged.offset + staged.bytes - need // 2,
              "before-buffer": staged.offset - 64}[where]
    before = sequence_snapshot(client, seq)
    req = compact_request(seq, "streamingllm")
    req.queries_shm.dtype = common_pb2.DTYPE_F16
    req.queries_shm.shape.extend([L, HQ, 1, D])
    req.queries_shm.offset = offset
    assert_refused(raw_call(kvd, "compact", req), E.INVALID_ARGUMENT, "queries_shm.offset",
                   str(offset), "staging buffer")
    assert_alive_and_unchanged(client, seq, before, witness)
    # and a well-placed one right after works
    client.compact(seq, "streamingllm", sinks=1, recent=2)


@pytest.mark.parametrize("field", ["queries", "queries_shm"])
def test_queries_window_of_2_32_minus_1(kvd, client, witness, field):
    """A window dimension of 2^32 - 1 (bytes that overflow nothing on 64 bits, but must not be
    trusted either): refused before any allocation."""
    seq = filled(client)
    staged = client.stage(seq, 4096)
    before = sequence_snapshot(client, seq)
    req = compact_request(seq, "snapkv")
    t = getattr(req, field)
    t.dtype = common_pb2.DTYPE_F16
    t.shape.extend([L, HQ, U32_MAX, D])
    if field == "queries":
        t.data = b"\0" * 256
    else:
        t.offset = staged.offset
    assert_refused(raw_call(kvd, "compact", req), E.INVALID_ARGUMENT, field)
    assert_alive_and_unchanged(client, seq, before, witness)


# ---------------------------------------------------------------------------------------------
# Finding 2: a long-lived sequence killed the daemon (int32 positions, uint64 lengths)

LIMIT = 40


@pytest.fixture
def limited(make_daemon):
    """A daemon whose sequences may hold at most LIMIT tokens; (daemon, client, witness)."""
    def mutate(cfg):
        cfg["server"]["max_sequence_tokens"] = LIMIT
    d = make_daemon(mutate)
    c = d.client()
    yield d, c, Witness(c)
    c.close()


def test_hello_reports_max_sequence_tokens(kvd, client, limited):
    assert client.hello().limits.max_sequence_tokens == 2**31 - 1  # the default, and the most
    _, c, _ = limited
    assert c.hello().limits.max_sequence_tokens == LIMIT


def test_append_and_reserve_past_the_sequence_limit(limited):
    d, c, witness = limited
    seq = c.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 40, seed=5)
    c.append(seq, k[:, :, :30], v[:, :, :30])
    before = sequence_snapshot(c, seq)
    free = c.stats().free_pages
    for name, call in [("append", lambda: c.append(seq, k[:, :, 29:], v[:, :, 29:])),
                       ("reserve", lambda: c.append(seq, k[:, :, 29:], v[:, :, 29:], zero_copy=True)),
                       ("reserve", lambda: c.reserve(seq, 11))]:
        msg = expect(E.INVALID_ARGUMENT, call)
        assert name in msg and "server.max_sequence_tokens" in msg and f"({LIMIT})" in msg, msg
        assert sequence_snapshot(c, seq) == before and c.stats().free_pages == free
        assert c.stats(seq).sequence.reserved_tokens == 0
    # exactly up to the limit is fine, through either path
    c.append(seq, k[:, :, 30:35], v[:, :, 30:35])
    c.append(seq, k[:, :, 35:], v[:, :, 35:], zero_copy=True)
    assert c.stats(seq).sequence.length == LIMIT
    # compaction does not lower the length, so the sequence stays full
    c.compact(seq, "streamingllm", sinks=1, recent=3)
    for call in [lambda: c.reserve(seq, 1), lambda: c.append(seq, k[:, :, :1], v[:, :, :1])]:
        assert "server.max_sequence_tokens" in expect(E.INVALID_ARGUMENT, call)
    assert [h.positions.tolist() for h in c.query(seq, mode="metadata")] == [[0, 37, 38, 39]] * (L * H)
    witness.check()


def test_reserve_commit_compact_cycles_reach_the_limit_without_kv_bytes(make_daemon):
    """The path of the finding: Reserve/Commit/Compact cycles grow the logical length without
    sending any K/V; at the limit the next Reserve is refused and metadata queries still work."""
    limit = 1000

    def mutate(cfg):
        cfg["server"]["max_sequence_tokens"] = limit
    d = make_daemon(mutate)
    c = d.client()
    witness = Witness(c)
    seq = c.create_sequence(MODEL_F16)
    length = 0
    while length + 64 <= limit:
        r = c.reserve(seq, 64)
        c.commit(seq, r.reservation_id, 64)
        c.compact(seq, "streamingllm", sinks=1, recent=3)
        length += 64
    r = c.reserve(seq, limit - length)
    c.commit(seq, r.reservation_id, limit - length)
    msg = expect(E.INVALID_ARGUMENT, c.reserve, seq, 1)
    assert "server.max_sequence_tokens" in msg and f"({limit})" in msg
    q = c.query(seq, mode="metadata")
    assert q.length == limit
    want = [0, 957, 958, 959] + list(range(960, limit))
    assert all(h.positions.tolist() == want for h in q), q[0].positions.tolist()
    witness.check()
    c.close()


def test_a_sequence_stops_at_2_31_minus_1_tokens(make_daemon):
    """The finding at its real boundary, with the default limit: a one-head model with 65536-token
    pages and 2^24-token reservations reaches 2^31 - 2^24 tokens in 127 Reserve/Commit/Compact
    cycles without sending K/V. The next 2^24 would pass int32 positions (before: the daemon
    trapped on the next compaction or metadata Query): refused; 2^24 - 1 fits exactly."""
    step = 1 << 24

    def mutate(cfg):
        cfg["models"].append(dict(name="long-f16", layers=1, kv_heads=1, q_heads=1, head_dim=1,
                                  page_tokens=65536, dtype="f16", default_method="streamingllm"))
        cfg["arena"]["size_bytes"] = "96MiB"  # 256 KiB pages: a 2^24 reservation takes 257
        cfg["server"]["max_tokens_per_append"] = step
    d = make_daemon(mutate)
    c = d.client(timeout_ms=60000)
    witness = Witness(c)
    assert c.hello().limits.max_sequence_tokens == 2**31 - 1
    seq = c.create_sequence("long-f16")
    for _ in range(127):
        r = c.reserve(seq, step)
        c.commit(seq, r.reservation_id, step)
        c.compact(seq, "streamingllm", sinks=1, recent=1)
    length = 127 * step
    assert c.stats(seq).sequence.length == length == 2**31 - step
    msg = expect(E.INVALID_ARGUMENT, c.reserve, seq, step)
    assert "server.max_sequence_tokens (2147483647)" in msg and f"from {length} to {2**31}" in msg, msg
    r = c.reserve(seq, step - 1)
    c.commit(seq, r.reservation_id, step - 1)
    c.compact(seq, "streamingllm", sinks=1, recent=2)
    q = c.query(seq, mode="metadata")
    assert q.length == 2**31 - 1
    assert q[(0, 0)].positions.tolist() == [0, 2**31 - 3, 2**31 - 2]
    for n in (1, step):
        assert "server.max_sequence_tokens" in expect(E.INVALID_ARGUMENT, c.reserve, seq, n)
    witness.check()
    c.close()


# ---------------------------------------------------------------------------------------------
# Finding 3: non-finite numbers (NaN to Int, inf / inf)

@pytest.mark.parametrize("method,name,value", [
    ("snapkv", "fraction", math.nan), ("headkv", "temperature", math.inf),
    ("headkv", "beta", math.nan), ("balancekv", "gamma", -math.inf), ("balancekv", "tau", math.nan),
    ("pyramidkv", "beta", math.inf), ("adakv", "floor", math.nan), ("dbudgetkv", "threshold", math.nan),
    ("knorm", "fraction", -math.inf),
])
def test_non_finite_float_params(kvd, client, witness, method, name, value):
    seq = filled(client)
    before = sequence_snapshot(client, seq)
    req = compact_request(seq, method, **{name: value})
    msg = assert_refused(raw_call(kvd, "compact", req), E.INVALID_ARGUMENT, f"'{name}'", "finite")
    assert method in msg
    assert_alive_and_unchanged(client, seq, before, witness)


@pytest.mark.parametrize("model,qdtype", [(MODEL_F16, None), (MODEL_BF16, None), (MODEL_F32, None),
                                          (MODEL_F16, np.float32)],
                         ids=["f16", "bf16", "f32", "f32-for-f16"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("shm", [False, True], ids=["inline", "shm"])
def test_non_finite_observation_queries(kvd, client, witness, model, qdtype, bad, shm):
    seq = filled(client, model, tokens=16)
    q = queries(model, w=4, dtype=qdtype)
    q[1, 2, 3, 5] = bad  # f16 and bf16 have NaN and ±inf too
    before = sequence_snapshot(client, seq)
    msg = expect(E.INVALID_ARGUMENT, client.compact, seq, "snapkv", queries=q, queries_in_shm=shm,
                 budget=2)
    field = "queries_shm" if shm else "queries"
    assert f"compact: {field} holds a non-finite value" in msg, msg
    assert "[layer 1, q_head 2, window 3, dim 5]" in msg, msg
    assert_alive_and_unchanged(client, seq, before, witness)


def write_table(path, table: dict) -> None:
    # json.dumps writes NaN / Infinity / -Infinity for non-finite floats (not JSON, but what a
    # buggy calibration run would produce)
    path.write_text(json.dumps(table))


def full_table(value=1.0):
    return {f"{l}-{h}": [value, value] for l in range(L) for h in range(H)}


@pytest.mark.parametrize("bad,text", [(math.nan, None), (math.inf, None), (-math.inf, None),
                                      (None, "1e999"), (None, "-1e999")],
                         ids=["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_score_file_entries(kvd, client, witness, bad, text):
    table = full_table(0.5)
    if bad is not None:
        table["1-0"] = [0.25, bad]
        body = json.dumps(table)
    else:
        body = json.dumps(table).replace('"1-0": [0.5, 0.5]', f'"1-0": [0.25, {text}]')
        assert text in body
    (kvd.workdir / "nonfinite.json").write_text(body)
    seq = filled(client, tokens=16)
    before = sequence_snapshot(client, seq)
    msg = expect(E.INVALID_ARGUMENT, client.compact, seq, "headkv", queries=queries(), budget=4,
                 scores="nonfinite.json")
    assert "head-score file nonfinite.json: entry 2 (counting from 0, in file order)" in msg, msg
    assert "non-finite" in msg and "index 1" in msg, msg
    assert "0.25" not in msg and "1-0" not in msg, msg  # no contents
    assert_alive_and_unchanged(client, seq, before, witness)


@pytest.mark.parametrize("importances,temperature", [
    ([3.0, 2.0, 1.0, 0.5], 1000.0),   # 3^1000 = inf: inf / inf was NaN, then Int(NaN) trapped
    ([1e300, 3.0, 1.0, 2.5], 2.0),    # (1e300)^2 = inf
    ([1e308, 1e308, 1.0, 0.0], 1.0),  # the sum overflows
])
def test_large_importances_do_not_trap(kvd, client, witness, importances, temperature):
    table = {f"{i // H}-{i % H}": [x] for i, x in enumerate(importances)}
    (kvd.workdir / "large.json").write_text(json.dumps(table))
    seq = filled(client, tokens=40)
    r = client.compact(seq, "headkv", queries=queries(), budget=8, beta=2.0,
                       temperature=temperature, scores="large.json")
    # shared = ⌊8/2⌋ = 4 per head, a pool of 16 split by importance^temperature, 4 kept by all
    top = [x for x in importances if x == max(importances)]
    pool = [16 // len(top) if x == max(importances) else 0 for x in importances]
    assert list(r.budgets) == [4 + p for p in pool]
    witness.check()


# ---------------------------------------------------------------------------------------------
# Finding 4: client-named files

REFUSAL = "kvd: headkv scores '{}' is not a readable score file in the configured files.directories"
SECRET = "SECRET-api-key-0451"


@pytest.fixture
def files_daemon(make_daemon):
    """A daemon with files.directories [a, b] under its workdir, valid score files in both, and
    bait outside them; (daemon, client, witness, dirs)."""
    dirs = {}
    d = make_daemon(start=False)
    w = d.workdir
    a, b, private = w / "a", w / "b", w / "private"
    for p in (a, b, private, a / "sub"):
        p.mkdir()
    write_table(a / "good.json", full_table(1.0))
    write_table(a / "sub" / "nested.json", full_table(1.0))
    write_table(b / "other.json", full_table(1.0))
    write_table(w / "beside-config.json", full_table(1.0))
    (private / "secret.json").write_text(json.dumps({SECRET: ["hunter2"]}))
    (private / "secret.txt").write_text(f"password={SECRET}\n")
    (a / "notjson.json").write_text(f"token={SECRET}\n")
    (a / "keyed.json").write_text(json.dumps({SECRET: [1.0]}))
    os.symlink(private / "secret.json", a / "link-out.json")
    os.symlink(w / "beside-config.json", a / "link-to-config-dir.json")
    os.symlink(a / "good.json", a / "link-in.json")
    os.symlink("sub/nested.json", a / "link-rel.json")
    os.mkfifo(a / "fifo.json")
    d.config["files"] = {"directories": [str(a), "b"]}  # "b" is relative to the config file
    d.config_path.write_text(to_yaml(d.config) + "\n")
    d.start()
    dirs.update(a=a, b=b, private=private, workdir=w)
    c = d.client()
    yield d, c, Witness(c), dirs
    c.close()


def _refused_names(dirs):
    a, private, w = dirs["a"], dirs["private"], dirs["workdir"]
    return [
        str(private / "secret.json"),        # absolute, outside
        str(a / "good.json"),                # absolute, even inside
        "../private/secret.json",            # ..
        "sub/../good.json",                  # .. inside
        "../a/good.json",
        "link-out.json",                     # a symlink out
        "link-to-config-dir.json",           # out of files.directories, into the config dir
        "beside-config.json",                # the config dir is not a files directory here
        "missing.json",
        "missing/../good.json",
        "sub",                               # a directory
        "fifo.json",                         # would block a reader
        "notjson.json",                      # not JSON: contents never echoed
        "./",
        "good.json\0.txt",
    ]


def test_client_named_files_are_refused_uniformly(files_daemon):
    d, c, witness, dirs = files_daemon
    seq = filled(c, tokens=16)
    before = sequence_snapshot(c, seq)
    messages = set()
    for name in _refused_names(dirs):
        t0 = time.monotonic()
        msg = expect(E.INVALID_ARGUMENT, c.compact, seq, "headkv", queries=queries(), budget=4,
                     scores=name)
        assert time.monotonic() - t0 < 3, f"{name!r} took {time.monotonic() - t0:.1f} s"
        assert msg == REFUSAL.format(name), msg
        assert SECRET not in msg and "hunter2" not in msg and "password" not in msg
        messages.add(msg.replace(name, "NAME"))
        assert sequence_snapshot(c, seq) == before
    assert len(messages) == 1, messages  # missing, outside, unreadable, not JSON: one answer
    witness.check()


def test_client_named_file_contents_never_echoed(files_daemon):
    """A JSON file inside the directories whose key is a secret: the error names the entry's
    index, not its key."""
    d, c, witness, dirs = files_daemon
    seq = filled(c, tokens=16)
    msg = expect(E.INVALID_ARGUMENT, c.compact, seq, "headkv", queries=queries(), budget=4,
                 scores="keyed.json")
    assert "keyed.json" in msg and "entry 0" in msg and SECRET not in msg, msg
    witness.check()


@pytest.mark.parametrize("name", ["good.json", "other.json", "link-in.json", "link-rel.json",
                                  "sub/nested.json", "./good.json", "sub//nested.json"])
def test_client_named_files_inside_the_directories_work(files_daemon, name):
    d, c, witness, dirs = files_daemon
    seq = filled(c, tokens=16)
    r = c.compact(seq, "headkv", queries=queries(), budget=4, beta=2.0, scores=name)
    assert list(r.budgets) == [4] * (L * H)  # equal importances: equal budgets
    witness.check()


def test_policy_files_relative_to_config_dir_and_request_override(make_daemon):
    """A policy's file (the operator's) may sit beside the config file even when files.directories
    points elsewhere; a request that overrides ``scores`` is held to files.directories."""
    def mutate(cfg):
        cfg["policies"] = {"head": {"method": "headkv", "params": {"scores": "beside.json",
                                                                   "budget": 4, "beta": 2.0}}}
        cfg["files"] = {"directories": ["scores-dir"]}
    d = make_daemon(mutate, start=False)
    write_table(d.workdir / "beside.json", full_table(1.0))
    (d.workdir / "scores-dir").mkdir()
    write_table(d.workdir / "scores-dir" / "mine.json", full_table(1.0))
    d.start()
    c = d.client()
    witness = Witness(c)
    seq = filled(c, tokens=16)
    assert list(c.compact(seq, policy="head", queries=queries()).budgets) == [4] * (L * H)
    seq = filled(c, tokens=16)
    msg = expect(E.INVALID_ARGUMENT, c.compact, seq, policy="head", queries=queries(),
                 scores="beside.json")
    assert msg == REFUSAL.format("beside.json")
    assert list(c.compact(seq, policy="head", queries=queries(), scores="mine.json").budgets) \
        == [4] * (L * H)
    witness.check()
    c.close()


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_policy_relative_file_escaping_is_a_config_error(make_daemon, tmp_path, how):
    """A policy's relative path must resolve inside the config directory or files.directories."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_table(outside / "scores.json", full_table(1.0))
    d = make_daemon(start=False)
    os.symlink(outside / "scores.json", d.workdir / "link.json")
    name = {"dotdot": os.path.relpath(outside / "scores.json", d.workdir), "symlink": "link.json"}[how]
    assert not name.startswith("/")
    d.config["policies"] = {"head": {"method": "headkv", "params": {"scores": name}}}
    d.config_path.write_text(to_yaml(d.config) + "\n")
    d.start(wait=False)
    rc = d.proc.wait(20)
    err = d.stderr()
    assert rc == 2, err
    assert "policies.head" in err and "outside the config file's directory and files.directories" in err, err


def test_policy_absolute_file_is_the_operators_choice(make_daemon, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_table(outside / "scores.json", full_table(1.0))

    def mutate(cfg):
        cfg["policies"] = {"head": {"method": "headkv",
                                    "params": {"scores": str(outside / "scores.json"), "budget": 4, "beta": 2.0}}}
    d = make_daemon(mutate)
    c = d.client()
    witness = Witness(c)
    seq = filled(c, tokens=16)
    assert list(c.compact(seq, policy="head", queries=queries()).budgets) == [4] * (L * H)
    # the same absolute path from a client is refused
    msg = expect(E.INVALID_ARGUMENT, c.compact, seq, policy="head", queries=queries(),
                 scores=str(outside / "scores.json"))
    assert msg == REFUSAL.format(str(outside / "scores.json"))
    witness.check()
    c.close()


# ---------------------------------------------------------------------------------------------
# Finding 5: the rest of the wire's numbers

def _append(seq, shape, nbytes=64):
    req = append_pb2.AppendRequest(sequence_id=seq)
    for t in (req.keys, req.values):
        t.dtype = common_pb2.DTYPE_F16
        t.shape.extend(shape)
        t.data = b"\0" * nbytes
    return req


SWEEP = [
    # (id, build(seq, staged) -> (kind, body), code, words)
    ("append-tokens-2^32-1", lambda s, st: ("append", _append(s, [L, H, U32_MAX, D])),
     E.INVALID_ARGUMENT, ["tokens", "max_tokens_per_append"]),
    ("append-layers-2^32-1", lambda s, st: ("append", _append(s, [U32_MAX, H, 1, D])),
     E.INVALID_ARGUMENT, ["shape"]),
    ("append-head-dim-2^32-1", lambda s, st: ("append", _append(s, [L, H, 1, U32_MAX])),
     E.INVALID_ARGUMENT, ["shape"]),
    ("append-5d", lambda s, st: ("append", _append(s, [L, H, 1, D, U32_MAX])),
     E.INVALID_ARGUMENT, ["shape"]),
    ("reserve-2^32-1", lambda s, st: ("reserve", append_pb2.ReserveRequest(sequence_id=s, num_tokens=U32_MAX)),
     E.INVALID_ARGUMENT, ["num_tokens", "max_tokens_per_append"]),
    ("reserve-0", lambda s, st: ("reserve", append_pb2.ReserveRequest(sequence_id=s, num_tokens=0)),
     E.INVALID_ARGUMENT, ["num_tokens"]),
    ("commit-unknown-2^64-1", lambda s, st: ("commit", append_pb2.CommitRequest(
        sequence_id=s, reservation_id=U64_MAX, num_tokens=1)), E.NOT_FOUND, ["reservation"]),
    ("commit-keep-unknown-2^64-1", lambda s, st: ("commit", append_pb2.CommitRequest(
        sequence_id=s, reservation_id=U64_MAX, num_tokens=U32_MAX, keep_reserved=True)), E.NOT_FOUND, ["reservation"]),
    ("commit-keep-with-abort", lambda s, st: ("commit", append_pb2.CommitRequest(
        sequence_id=s, reservation_id=U64_MAX, abort=True, keep_reserved=True)), E.INVALID_ARGUMENT,
     ["abort", "keep_reserved"]),
    ("stage-2^64-1", lambda s, st: ("stage", compact_pb2.StageRequest(sequence_id=s, bytes=U64_MAX)),
     E.RESOURCE_EXHAUSTED, ["bytes", "staging"]),
    ("stage-0", lambda s, st: ("stage", compact_pb2.StageRequest(sequence_id=s, bytes=0)),
     E.INVALID_ARGUMENT, ["bytes"]),
    ("query-layer-2^32-1", lambda s, st: ("query", query_pb2.QueryRequest(
        sequence_id=s, mode=query_pb2.QUERY_MODE_INLINE, layers=[0, U32_MAX])), E.INVALID_ARGUMENT, ["layer"]),
    ("query-layer-twice", lambda s, st: ("query", query_pb2.QueryRequest(
        sequence_id=s, mode=query_pb2.QUERY_MODE_METADATA, layers=[1, 1])), E.INVALID_ARGUMENT, ["layer"]),
    ("query-mode-2^31-1", lambda s, st: ("query", query_pb2.QueryRequest(sequence_id=s, mode=2**31 - 1)),
     E.INVALID_ARGUMENT, ["mode"]),
    ("sequence-id-2^64-1", lambda s, st: ("query", query_pb2.QueryRequest(sequence_id=U64_MAX)),
     E.NOT_FOUND, [str(U64_MAX)]),
    ("rank-2^64-1", lambda s, st: ("rank_layers", compact_pb2.RankLayersRequest(sequence_ids=[s, U64_MAX])),
     E.NOT_FOUND, [str(U64_MAX)]),
    ("budget-int64-max", lambda s, st: ("compact", compact_request(s, "knorm", budget=I64_MAX)),
     E.INVALID_ARGUMENT, ["'budget'"]),
    ("sinks-int64-min", lambda s, st: ("compact", compact_request(s, "streamingllm", sinks=I64_MIN)),
     E.INVALID_ARGUMENT, ["'sinks'"]),
    ("recent-int64-max", lambda s, st: ("compact", compact_request(s, "streamingllm", recent=I64_MAX)),
     E.INVALID_ARGUMENT, ["'recent'"]),
    ("window-2^62", lambda s, st: ("compact", compact_request(s, "knorm", window=2**62)),
     E.INVALID_ARGUMENT, ["'window'"]),
    ("kernel-2^40", lambda s, st: ("compact", compact_request(s, "snapkv", kernel=2**40 + 1)),
     E.INVALID_ARGUMENT, ["'kernel'"]),
    ("itrs-2^31", lambda s, st: ("compact", compact_request(s, "balancekv", itrs=2**31)),
     E.INVALID_ARGUMENT, ["'itrs'"]),
    ("block-int64-min", lambda s, st: ("compact", compact_request(s, "balancekv", block=I64_MIN)),
     E.INVALID_ARGUMENT, ["'block'"]),
    ("seed-int64-max", lambda s, st: ("compact", compact_request(s, "balancekv", seed=I64_MAX)),
     E.INVALID_ARGUMENT, ["'seed'"]),
    ("seed-negative", lambda s, st: ("compact", compact_request(s, "balancekv", seed=-1)),
     E.INVALID_ARGUMENT, ["'seed'"]),
    ("fraction-1e308", lambda s, st: ("compact", compact_request(s, "snapkv", fraction=1e308)),
     E.INVALID_ARGUMENT, ["'fraction'"]),
    ("int-for-float-int64-max", lambda s, st: ("compact", compact_request(s, "pyramidkv", beta=I64_MAX)),
     E.INVALID_ARGUMENT, ["'beta'"]),
    ("float-for-int", lambda s, st: ("compact", compact_request(s, "knorm", budget=1e300)),
     E.INVALID_ARGUMENT, ["'budget'"]),
    ("alias-layer-huge", lambda s, st: ("compact", compact_request(s, "kvsharer", alias_map="99999999999999999999:0")),
     E.INVALID_ARGUMENT, ["alias"]),
    ("alias-owner-2^64-1", lambda s, st: ("compact", compact_request(s, "kvsharer", alias_map=f"1:{U64_MAX}")),
     E.INVALID_ARGUMENT, ["alias"]),
    ("alias-layer-2^32", lambda s, st: ("compact", compact_request(s, "kvsharer", alias_map="4294967296:0")),
     E.INVALID_ARGUMENT, ["alias", "outside layers"]),
    ("alias-int64-min", lambda s, st: ("compact", compact_request(s, "kvsharer", alias_map=f"1:{I64_MIN}")),
     E.INVALID_ARGUMENT, ["alias"]),
    ("queries-4d-wrong-dims", lambda s, st: ("compact", _with_queries(compact_request(s, "snapkv"),
                                                                      [U32_MAX, U32_MAX, U32_MAX, U32_MAX])),
     E.INVALID_ARGUMENT, ["queries shape"]),
    ("queries-dtype-99", lambda s, st: ("compact", _with_queries(compact_request(s, "snapkv"),
                                                                 [L, HQ, 1, D], dtype=99)),
     E.INVALID_ARGUMENT, ["dtype"]),
]


def _with_queries(req, shape, dtype=common_pb2.DTYPE_F16):
    req.queries.dtype = dtype
    req.queries.shape.extend(shape)
    req.queries.data = b"\0" * 64
    return req


@pytest.mark.parametrize("case", SWEEP, ids=[s[0] for s in SWEEP])
def test_hostile_wire_numbers(kvd, client, witness, case):
    _, build, code, words = case
    seq = filled(client)
    staged = client.stage(seq, 4096)
    before = sequence_snapshot(client, seq)
    kind, body = build(seq, staged)
    assert_refused(raw_call(kvd, kind, body), code, *words)
    assert_alive_and_unchanged(client, seq, before, witness)


def test_commit_more_than_2_32_minus_1_reserved(kvd, client, witness):
    seq = filled(client)
    before = sequence_snapshot(client, seq)
    r = client.reserve(seq, 2)
    # Sent on the connection that reserved (a reservation belongs to its connection).
    with pytest.raises(KvdError) as e:
        client.call("commit", append_pb2.CommitRequest(sequence_id=seq, reservation_id=r.reservation_id,
                                                       num_tokens=U32_MAX))
    assert e.value.code == E.FAILED_PRECONDITION, e.value
    assert "num_tokens" in str(e.value) and str(U32_MAX) in str(e.value), e.value
    with pytest.raises(KvdError) as e:  # the same with keep_reserved: refused, nothing committed
        client.commit(seq, r.reservation_id, U32_MAX, keep_reserved=True)
    assert e.value.code == E.FAILED_PRECONDITION and str(U32_MAX) in str(e.value), e.value
    client.commit(seq, r.reservation_id, abort=True)
    assert_alive_and_unchanged(client, seq, before, witness)
