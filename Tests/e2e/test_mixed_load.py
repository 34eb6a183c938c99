"""Mixed load: 16 clients at once, each on its own sequences, for a bounded time.

Every client (a thread with its own kvd.Client, so its own socket and arena mapping) does a random
mix of create, inline append, zero-copy reserve/commit (whole, partial, aborted), queries in every
mode, compactions (streamingllm, knorm, snapkv with inline or staged observation queries,
balancekv, a knorm+pyramidkv composition and kvsharer through policies), stage, stats, release,
and deliberately bad requests. It keeps a NumPy model of each sequence (mixed_load_model.py) and
checks every answer against it bit for bit. At the end: the daemon is alive, no client saw an
unexpected error (INTERNAL, a timeout, or any code other than the one the bad request must get),
the daemon counted exactly the error replies the clients expected, and once every sequence is
released the arena's free pages are back to the total and the staging area is empty.

``KVD_MIXED_LOAD_SECONDS`` (default 8) bounds the run; ``scripts/sanitizers.sh`` runs it for 60 s
against a ThreadSanitizer build. ``KVD_MIXED_LOAD_TIMEOUT_MS`` (default 30000) is each call's
timeout: generous, because a sanitizer build is several times slower, and any timeout fails the
test. ``KVD_MIXED_LOAD_SEED`` reproduces a run's random choices (the daemon's timing still varies).
"""

from __future__ import annotations

import collections
import os
import threading
import time
import traceback

import numpy as np
import pytest

from conftest import (DTYPES, MODEL_WIDE, SEED_MODELS, Client, ErrorCode, KvdError, add_seed_models)
from mixed_load_model import (SeqModel, check_balance, check_query, check_stats,
                              check_topk_shape, streaming_expect)

CLIENTS = 16
SECONDS = float(os.environ.get("KVD_MIXED_LOAD_SECONDS", "8"))
TIMEOUT_MS = int(os.environ.get("KVD_MIXED_LOAD_TIMEOUT_MS", "30000"))
SEED = int(os.environ.get("KVD_MIXED_LOAD_SEED", str(int(time.time()) % 100000)))
MAX_TOKENS = 64          # server.max_tokens_per_append for this test
MAX_LIVE = 3             # sequences per client at once
MAX_HEAD_TOKENS = 160    # above this a client compacts (or releases) before appending more
MODELS = ["tiny-f16", "tiny-bf16", "tiny-f32", *SEED_MODELS]  # 2 and 4 layers, every dtype
POLICIES = {
    "share_1_0": {"sharer": "kvsharer", "params": {"alias_map": "1:0"}},      # any model
    "share_3_2": {"sharer": "kvsharer", "params": {"alias_map": "3:2"}},      # 4-layer models only
    "knorm_pyramid": {"scorer": "knorm", "allocator": "pyramidkv", "params": {"budget": 6, "window": 1}},
}
OPS = {  # relative frequency of each operation
    "create": 4, "append": 14, "append_zero_copy": 10, "reserve_partial": 5, "reserve_abort": 4,
    "query": 14, "stats": 5, "streamingllm": 5, "knorm": 4, "snapkv": 5, "balancekv": 3,
    "share": 2, "composed": 3, "stage": 2, "release": 3, "bad": 10,
}


def mixed_config(cfg: dict) -> None:
    """The e2e config plus the 4-layer models and the policies; no wide-f32 (its 4 KiB pages would
    make every page 4 KiB); room for 16 clients × 3 sequences × 160 tokens and their gathers."""
    add_seed_models(cfg, POLICIES)
    cfg["models"] = [m for m in cfg["models"] if m["name"] != MODEL_WIDE]
    cfg["arena"]["size_bytes"] = "64MiB"
    cfg["arena"]["staging_bytes"] = "24MiB"  # gathers peak near 9 MiB; room for fragmentation
    cfg["server"]["max_tokens_per_append"] = MAX_TOKENS
    cfg["server"]["compute_threads"] = 2


class Worker:
    """One client's loop. ``failure`` is set (and the loop ends) on the first wrong answer."""

    def __init__(self, index: int, endpoint: str, deadline: float):
        self.index, self.endpoint, self.deadline = index, endpoint, deadline
        self.rng = np.random.default_rng(SEED * 1000 + index)
        self.live: dict[int, SeqModel] = {}
        self.ops = collections.Counter()
        self.expected_errors = 0
        self.failure: str | None = None
        self.last_op = ""

    # -- helpers ------------------------------------------------------------------------------

    def data(self, sm: SeqModel, n: int, dtype=None, head_dim=None):
        """K, V [L, H, n, D], mostly normal values, sometimes -0.0, ±inf or NaN among them."""
        shape = (sm.L, sm.H, n, head_dim or sm.D)
        out = []
        for _ in range(2):
            a = (self.rng.standard_normal(shape) * 4).astype(np.float32)
            if self.rng.random() < 0.2 and a.size >= 3:
                flat = a.reshape(-1)
                flat[self.rng.choice(flat.size, 3, replace=False)] = self.rng.choice(
                    [-0.0, np.inf, -np.inf, np.nan], 3)
            out.append(a.astype(dtype or sm.dtype))
        return out

    def expect_error(self, code: ErrorCode, fn, *args, **kw) -> None:
        """``fn`` must fail with the daemon's ``code`` (request_id set: not refused client-side)."""
        try:
            fn(*args, **kw)
        except KvdError as e:
            assert e.code == code and e.request_id != 0, \
                f"{self.last_op}: expected {code.name} from the daemon, got {e!r}"
            self.expected_errors += 1
            return
        raise AssertionError(f"{self.last_op}: succeeded, expected {code.name}")

    def verify(self, c, sm: SeqModel) -> None:
        check_query(c, sm, str(self.rng.choice(["pages", "inline", "gather", "metadata"])))

    def pick(self) -> SeqModel | None:
        return self.live[int(self.rng.choice(list(self.live)))] if self.live else None

    # -- loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            with Client(self.endpoint, timeout_ms=TIMEOUT_MS, client_name=f"mixed-{self.index}") as c:
                c.hello()
                names, weights = zip(*OPS.items())
                p = np.array(weights, float) / sum(weights)
                while time.monotonic() < self.deadline:
                    op = str(self.rng.choice(names, p=p))
                    sm = self.pick()
                    if sm is None or (op == "create" and len(self.live) < MAX_LIVE):
                        op, sm = "create", None
                    elif op == "create":
                        op = "release"
                    elif max(sm.counts(), default=0) > MAX_HEAD_TOKENS and op.startswith(("append", "reserve")):
                        op = "streamingllm"
                    self.last_op = f"client {self.index} {op} seq {sm.seq if sm else '-'} (seed {SEED})"
                    getattr(self, "op_" + op)(c, sm)
                    self.ops[op] += 1
                for sm in list(self.live.values()):
                    self.last_op = f"client {self.index} final release seq {sm.seq}"
                    self.op_release(c, sm)
        except BaseException:
            self.failure = f"{self.last_op}:\n{traceback.format_exc()}"

    # -- operations ---------------------------------------------------------------------------

    def op_create(self, c, _):
        model = str(self.rng.choice(MODELS))
        seq = c.create_sequence(model, tenant=f"mixed-{self.index}")
        sm = SeqModel(seq, model, c.models[model], DTYPES.get(model) or SEED_MODELS[model])
        self.live[seq] = sm
        check_stats(c, sm)

    def op_append(self, c, sm):
        k, v = self.data(sm, int(self.rng.integers(1, 25)))
        r = c.append(sm.seq, k, v)
        assert (r.first_position, r.length, r.generation) == (
            sm.length, sm.length + k.shape[2], sm.generation), f"append reply {r}"
        sm.append(k, v)
        self.verify(c, sm)

    def op_append_zero_copy(self, c, sm):
        k, v = self.data(sm, int(self.rng.integers(1, 25)))
        r = c.append(sm.seq, k, v, zero_copy=True)
        assert (r.first_position, r.length) == (sm.length, sm.length + k.shape[2]), f"commit {r}"
        sm.append(k, v)
        self.verify(c, sm)

    def op_reserve_partial(self, c, sm):
        """Reserve n, write all n, commit the first m ≤ n; meanwhile the sequence refuses appends
        and a commit of more than reserved (FAILED_PRECONDITION) and Stats shows the reservation."""
        n = int(self.rng.integers(1, 25))
        k, v = self.data(sm, n)
        res = c.reserve(sm.seq, n)
        assert res.num_tokens == n
        c.arena.write_reservation(res, k, v)
        check_stats(c, sm, reserved=n)
        if self.rng.random() < 0.3:
            self.expect_error(ErrorCode.FAILED_PRECONDITION, c.append, sm.seq, k, v)
            self.expect_error(ErrorCode.FAILED_PRECONDITION, c.commit, sm.seq, res.reservation_id, n + 1)
        m = int(self.rng.integers(1, n + 1))
        r = c.commit(sm.seq, res.reservation_id, m)
        assert (r.first_position, r.length) == (sm.length, sm.length + m), f"commit {r}"
        sm.append(k[:, :, :m], v[:, :, :m])
        check_stats(c, sm)
        self.verify(c, sm)

    def op_reserve_abort(self, c, sm):
        n = int(self.rng.integers(1, 25))
        res = c.reserve(sm.seq, n)
        if self.rng.random() < 0.5:
            c.arena.write_reservation(res, *self.data(sm, n))  # written, then dropped
        c.commit(sm.seq, res.reservation_id, abort=True)
        self.expect_error(ErrorCode.NOT_FOUND, c.commit, sm.seq, res.reservation_id, 1)
        check_stats(c, sm)
        self.verify(c, sm)

    def op_query(self, c, sm):
        mode = str(self.rng.choice(["pages", "inline", "gather", "metadata"]))
        layers = None
        if self.rng.random() < 0.3:
            layers = sorted(int(x) for x in self.rng.choice(sm.L, int(self.rng.integers(1, sm.L + 1)),
                                                            replace=False))
        check_query(c, sm, mode, layers)

    def op_stats(self, c, sm):
        check_stats(c, sm)
        arena = c.stats()
        assert 0 <= arena.free_pages <= arena.total_pages and arena.staging_used_bytes <= arena.staging_bytes

    def op_stage(self, c, sm):
        nbytes = int(self.rng.integers(1, 64 * 1024))
        r = c.stage(sm.seq, nbytes)
        info = c.arena.info
        assert r.bytes >= nbytes and info.staging_offset <= r.offset and \
            r.offset + r.bytes <= info.staging_offset + info.staging_bytes, f"stage {r}"
        self.verify(c, sm)

    def op_release(self, c, sm):
        r = c.release(sm.seq)
        assert r.pages_freed == sm.pages(), f"release freed {r.pages_freed}, model {sm.pages()}"
        del self.live[sm.seq]
        self.expect_error(ErrorCode.NOT_FOUND, c.query, sm.seq, mode="metadata")

    # -- compaction ---------------------------------------------------------------------------

    def compact(self, c, sm, expect_method: str, check_head, **kw):
        """Runs a compaction and moves the model to what it kept: each owning head's kept
        positions (from a METADATA query) must pass ``check_head(key, idx, n, budget, new_lw)``,
        and the reply's counts, aliases and generation must agree."""
        before, state = {key: len(st.pos) for key, st in sm.heads.items()}, sm.state()
        r = c.compact(sm.seq, **kw)
        assert r.sequence_id == sm.seq and r.method == expect_method, f"compact reply {r}"
        if kw.get("policy"):
            assert (r.policy, r.chosen_by) == (kw["policy"], "request"), f"compact reply {r}"
        if expect_method == "kvsharer" or "share" in kw.get("policy", ""):
            alias_map = POLICIES[kw["policy"]]["params"]["alias_map"]
            sm.alias({int(a): int(b) for a, b in (p.split(":") for p in alias_map.split(","))})
        assert sorted((a.layer, a.owner) for a in r.aliases) == sorted(sm.aliases.items()), \
            f"aliases {r.aliases} != model {sm.aliases}"
        assert len(r.heads) == sm.L * sm.H, f"{len(r.heads)} head counts"
        meta = {(hd.layer, hd.head): hd for hd in c.query(sm.seq, mode="metadata")}
        for (l, h), st in sm.heads.items():
            hd, n, where = meta[(l, h)], before[(l, h)], f"{self.last_op} head ({l},{h})"
            rc = r.heads[l * sm.H + h]
            assert (rc.layer, rc.head, rc.before, rc.kept) == (l, h, n, hd.num_tokens), \
                f"{where}: reply count {rc} (model had {n}, query shows {hd.num_tokens})"
            idx = sm.kept_indices((l, h), hd.positions)
            budget = r.budgets[l * sm.H + h] if len(r.budgets) == sm.L * sm.H else None
            check_head(idx, n, budget, hd.log_weights, where, st)
            st.take(idx, hd.log_weights)
        changed = sm.state() != state
        if expect_method == "balancekv" and not changed:
            # Rewriting all-zero log-weights with explicit zeros counts as a change to kvd.
            assert r.generation in (sm.generation, sm.generation + 1), f"generation {r.generation}"
        else:
            assert r.generation == sm.generation + changed, \
                f"generation {r.generation}, model {sm.generation} (changed: {changed})"
        sm.generation = r.generation
        check_stats(c, sm)
        self.verify(c, sm)  # the kept tokens' K/V equal the originals at those positions
        return r

    def op_streamingllm(self, c, sm):
        sinks, recent = int(self.rng.integers(0, 5)), int(self.rng.integers(0, 13))
        sinks += sinks + recent == 0

        def check(idx, n, _b, lw, where, st):
            assert idx.tolist() == streaming_expect(n, sinks, recent).tolist(), f"{where}: {idx.tolist()}"
            assert lw.tobytes() == st.lw[idx].tobytes(), f"{where}: log-weights changed"
        self.compact(c, sm, "streamingllm", check, method="streamingllm", sinks=sinks, recent=recent)

    def topk_check(self, budget, window):
        def check(idx, n, b, lw, where, st):
            assert b is not None, f"{where}: no budgets in the reply"
            if budget is not None:
                assert b == budget, f"{where}: budget {b} != {budget}"
            check_topk_shape(idx, n, b, window, where)
            assert lw.tobytes() == st.lw[idx].tobytes(), f"{where}: log-weights changed"
        return check

    def op_knorm(self, c, sm):
        low = min(sm.counts())
        window, budget = int(self.rng.integers(0, min(4, low) + 1)), int(self.rng.integers(1, 13))
        self.compact(c, sm, "knorm", self.topk_check(budget, window), method="knorm", budget=budget,
                     window=window)

    def op_snapkv(self, c, sm, in_shm=None):
        low = min(sm.counts())
        if low == 0:
            return self.op_append(c, sm)
        w, budget = int(self.rng.integers(1, min(6, low) + 1)), int(self.rng.integers(1, 13))
        dtype = sm.dtype if self.rng.random() < 0.5 else np.float32
        q = (self.rng.standard_normal((sm.L, sm.HQ, w, sm.D)) * 2).astype(dtype)
        in_shm = bool(self.rng.random() < 0.4) if in_shm is None else in_shm
        self.compact(c, sm, "snapkv", self.topk_check(budget, w), method="snapkv", queries=q,
                     queries_in_shm=in_shm, budget=budget, kernel=int(self.rng.choice([1, 3, 5])))

    def op_balancekv(self, c, sm):
        sinks, recent = int(self.rng.integers(0, 5)), int(self.rng.integers(0, 5))
        itrs, block = int(self.rng.integers(1, 3)), int(self.rng.choice([8, 16]))
        params = dict(method="balancekv", sinks=sinks, recent=recent, itrs=itrs, block=block,
                      seed=int(self.rng.integers(0, 1 << 30)))
        if any(0 < n < sinks + recent + (1 << itrs) for n in sm.counts()):
            # Every non-empty head's middle must halve itrs times.
            self.ops["balancekv refused"] += 1
            return self.expect_error(ErrorCode.INVALID_ARGUMENT, c.compact, sm.seq, **params)

        def check(idx, n, _b, lw, where, st):
            check_balance(idx, n, sinks, recent, itrs, st.lw, lw, where)
        self.compact(c, sm, "balancekv", check, **params)

    def op_share(self, c, sm):
        policy = str(self.rng.choice(["share_1_0", "share_3_2"]))
        if policy == "share_3_2" and sm.L < 4:
            self.ops["share refused"] += 1
            return self.expect_error(ErrorCode.INVALID_ARGUMENT, c.compact, sm.seq, policy=policy)

        def check(idx, n, _b, lw, where, st):
            assert idx.tolist() == list(range(n)) and lw.tobytes() == st.lw.tobytes(), where
        self.compact(c, sm, "kvsharer", check, policy=policy)

    def op_composed(self, c, sm):
        if min(sm.counts()) < 1:  # the policy's window of 1 must fit every head
            return self.op_append(c, sm)
        self.compact(c, sm, "knorm+pyramidkv", self.topk_check(None, 1), policy="knorm_pyramid")

    # -- deliberately bad requests ----------------------------------------------------------

    def op_bad(self, c, sm):
        kind = int(self.rng.integers(0, 11))
        unknown = int(self.rng.integers(1 << 40, 1 << 62))
        E = ErrorCode
        if kind == 0:
            self.expect_error(E.NOT_FOUND, c.query, unknown, mode=str(self.rng.choice(["inline", "metadata"])))
        elif kind == 1:
            self.expect_error(E.NOT_FOUND, c.append, unknown, *self.data(sm, 2))
        elif kind == 2:
            self.expect_error(E.NOT_FOUND, c.compact, unknown, "streamingllm")
        elif kind == 3:  # wrong head_dim
            self.expect_error(E.INVALID_ARGUMENT, c.append, sm.seq, *self.data(sm, 3, head_dim=sm.D + 1))
        elif kind == 4:  # wrong dtype
            other = np.float16 if sm.dtype == np.float32 else np.float32
            self.expect_error(E.INVALID_ARGUMENT, c.append, sm.seq, *self.data(sm, 3, dtype=other))
        elif kind == 5:  # more tokens than server.max_tokens_per_append, inline and reserved
            self.expect_error(E.INVALID_ARGUMENT, c.append, sm.seq, *self.data(sm, MAX_TOKENS + 1))
            self.expect_error(E.INVALID_ARGUMENT, c.reserve, sm.seq, MAX_TOKENS + 1)
        elif kind == 6:
            self.expect_error(E.NOT_FOUND, c.compact, sm.seq, "no-such-method")
        elif kind == 7:  # a window method without observation queries
            self.expect_error(E.FAILED_PRECONDITION, c.compact, sm.seq, "snapkv", budget=4)
        elif kind == 8:  # out-of-range and unknown parameters
            self.expect_error(E.INVALID_ARGUMENT, c.compact, sm.seq, "streamingllm", sinks=-1)
            self.expect_error(E.INVALID_ARGUMENT, c.compact, sm.seq, "streamingllm", bogus=1)
        elif kind == 9:  # observation queries of the wrong shape
            q = np.zeros((sm.L, sm.HQ + 1, 1, sm.D), np.float32)
            self.expect_error(E.INVALID_ARGUMENT, c.compact, sm.seq, "snapkv", queries=q)
        elif max(sm.counts()) > 0:  # a window larger than every head (empty heads do not count)
            self.expect_error(E.INVALID_ARGUMENT, c.compact, sm.seq, "knorm",
                              window=max(sm.counts()) + 1)
        self.verify(c, sm)  # and the sequence is unchanged


def test_mixed_load(make_daemon):
    d = make_daemon(mixed_config)
    deadline = time.monotonic() + SECONDS
    workers = [Worker(i, d.endpoint, deadline) for i in range(CLIENTS)]
    threads = [threading.Thread(target=w.run, name=f"mixed-{w.index}") for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 10 * TIMEOUT_MS / 1000 + 60)
    assert not any(t.is_alive() for t in threads), "a client is stuck"
    failures = [w.failure for w in workers if w.failure]
    assert d.proc.poll() is None, f"kvd died (exit {d.proc.returncode}):\n{d.stderr()[-4000:]}"
    assert not failures, (f"{len(failures)} of {CLIENTS} clients failed:\n"
                          + "\n".join(f.strip().splitlines()[-1] for f in failures)
                          + f"\nfirst in full:\n{failures[0]}")

    ops = sum((w.ops for w in workers), collections.Counter())
    expected_errors = sum(w.expected_errors for w in workers)
    print(f"\nmixed load: {CLIENTS} clients, {SECONDS:g} s, seed {SEED}: {sum(ops.values())} "
          f"operations, {expected_errors} expected error replies; {dict(sorted(ops.items()))}")
    assert all(ops[name] > 0 for name in OPS if name != "create") or SECONDS < 5, \
        f"some operations never ran: {dict(ops)}"
    with d.client(timeout_ms=TIMEOUT_MS) as c:
        st = c.stats()
        assert (st.sequences, st.free_pages, st.staging_used_bytes) == (0, st.total_pages, 0), \
            f"after releasing everything: {st}"
        assert st.errors == expected_errors, \
            f"the daemon sent {st.errors} error replies, the clients expected {expected_errors}"
    assert "error" not in d.stderr().lower(), f"kvd logged errors:\n{d.stderr()[-4000:]}"
