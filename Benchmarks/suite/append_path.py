"""Section 12: what one decode step's append costs — one token into every (layer, KV head) of a
SmolLM2-shaped sequence (30 layers × 3 KV heads × 64 dims, f16 and f32) — four ways, against one
raw ZeroMQ round trip of a Commit-sized message through the Swift echo, measured in the same run:

- inline: Append with the K/V in the message (one round trip);
- reserve_commit: Reserve, write into the arena, Commit (two round trips);
- keep_reserved: Reserve 64 tokens once, then per step write + Commit{keep_reserved} (one round trip);
- pipelined: kvd.AppendPipeline / kvd_pipeline_* (commits sent without waiting; replies collected
  when max_in_flight commits are unanswered, and at a flush per block, which is timed);
- pipelined_every8: the same with commit_every 8 (one Commit per 8 tokens; other clients see the
  tokens 8 at a time).

Modes and the echo alternate in blocks of 200 steps so machine noise hits all alike; a figure is the
median over blocks of (block time ÷ steps). Python rows use kvd.Client from pyzmq; C rows run
Benchmarks/c's `append` subcommand."""
import time

import numpy as np
import zmq

from kvd import AppendPipeline, Client

from . import cbench
from .processes import Daemon, Echo
from .summary import fmt, goal_mark, spread

MODELS = ("smollm2-135m", "smollm2-135m-f32")
MODES = ("inline", "reserve_commit", "keep_reserved", "pipelined", "pipelined_every8")
ECHO_BYTES = 24  # about a keep_reserved Commit request


class _Mode:
    """One mode's sequence (renewed outside the timed blocks so none grows past max_len)."""

    def __init__(self, client, model, name, window, ahead):
        self.client, self.model, self.name = client, model, name
        self.window, self.ahead = window, ahead
        self.seq = self.pipe = self.res = None
        self.used = self.length = 0
        self.renew()

    def renew(self):
        c = self.client
        if self.pipe is not None:
            self.pipe.close()
        if self.res is not None:
            c.commit(self.seq, self.res.reservation_id, abort=True)
        if self.seq is not None:
            c.release(self.seq)
        self.seq = c.create_sequence(self.model)
        self.pipe = None
        if self.name.startswith("pipelined"):
            self.pipe = AppendPipeline(c, self.seq, self.ahead, self.window,
                                       commit_every=8 if self.name == "pipelined_every8" else 1)
        self.res, self.used, self.length = None, 0, 0

    def close(self):
        self.renew()
        if self.pipe is not None:
            self.pipe.close()
        self.client.release(self.seq)


def _keep_step(m: _Mode, k2, v2, heads: int) -> None:
    """Write one token into the kept reservation (one fancy-indexed copy for K and one for V, as
    the pipeline does) and commit it, waiting for the reply."""
    c = m.client
    if m.res is None:
        m.res = c.reserve(m.seq, m.ahead)
        m.used = 0
        info = c.arena.info
        L = c.models[m.model]
        es = np.dtype(k2.dtype).itemsize
        d, P = L.head_dim, m.res.page_tokens
        base = c.arena.array(info.pages_offset, info.page_count * info.page_bytes // es, k2.dtype, writable=True)
        m.win = np.lib.stride_tricks.as_strided(base, shape=(base.size - d + 1, d), strides=(es, es), writeable=True)
        t = np.arange(m.ahead, dtype=np.int64)
        rows = np.empty((heads, m.ahead), dtype=np.int64)
        for i, hs in enumerate(m.res.heads):
            at = hs.first_slot + t
            pages = np.frombuffer(hs.page_ids, "<u4").astype(np.int64)[at // P]
            rows[i] = pages * info.page_bytes // es + (at % P) * d
        m.rows, m.vshift = rows, P * d
    r = m.rows[:, m.used]
    m.win[r] = k2
    m.win[r + m.vshift] = v2
    c.commit(m.seq, m.res.reservation_id, 1, keep_reserved=True)
    m.used += 1
    if m.used == m.ahead:
        m.res = None  # the last commit closed it


def python_rows(kvd_ep: str, echo_ep: str, model: str, steps: int, block: int, warmup: int,
                window: int = 4, ahead: int = 64, max_len: int = 2048) -> list:
    ctx = zmq.Context.instance()
    echo = ctx.socket(zmq.DEALER)
    echo.connect(echo_ep)
    payload = b"\x01" * ECHO_BYTES
    rows = []
    with Client(kvd_ep, timeout_ms=30000) as c:
        c.hello()
        L = c.models[model]
        dt = np.float16 if L.dtype == 1 else np.float32
        rng = np.random.default_rng(1)
        shape = (L.layers, L.kv_heads, 1, L.head_dim)
        k = rng.standard_normal(shape).astype(dt)
        v = rng.standard_normal(shape).astype(dt)
        k2, v2 = k.reshape(-1, L.head_dim), v.reshape(-1, L.head_dim)
        heads = L.layers * L.kv_heads
        modes = {name: _Mode(c, model, name, window, ahead) for name in MODES}
        per_step = {name: [] for name in ("echo",) + MODES}
        done = 0
        while done < warmup + steps:
            for name in per_step:
                m = modes.get(name)
                if m is not None and m.length + block > max_len:
                    m.renew()
                t0 = time.perf_counter()
                if name == "echo":
                    for _ in range(block):
                        echo.send(payload)
                        echo.recv()
                elif name == "inline":
                    for _ in range(block):
                        c.append(m.seq, k, v)
                elif name == "reserve_commit":
                    for _ in range(block):
                        c.append(m.seq, k, v, zero_copy=True)
                elif name == "keep_reserved":
                    for _ in range(block):
                        _keep_step(m, k2, v2, heads)
                else:
                    for _ in range(block):
                        m.pipe.append(k, v)
                    m.pipe.flush()
                dt_s = time.perf_counter() - t0
                if m is not None:
                    m.length += block
                if done >= warmup:
                    per_step[name].append(dt_s / block * 1e6)
            done += block
        for m in modes.values():
            m.close()
    echo.close(0)
    base = float(np.median(per_step["echo"]))
    for name, s in per_step.items():
        med = float(np.median(s))
        rows.append({"client": "python", "model": model, "name": name, "median": med, "min": min(s), "max": max(s),
                     "baseline_median": base, "ratio": med / base, "window": window})
    return rows


def c_rows(kvd_ep: str, echo_ep: str, model: str, steps: int, block: int, warmup: int, window: int = 4) -> list:
    rows = cbench.run("append", "--kvd", kvd_ep, "--echo", echo_ep, "--model", model, "--steps", str(steps),
                      "--block", str(block), "--warmup", str(warmup), "--window", str(window))
    return [dict(r, client="C") for r in rows]


def measure(steps: int, block: int, warmup: int) -> list:
    rows = []
    with Daemon("append") as d, Echo() as e:
        for model in MODELS:
            rows += c_rows(d.endpoints.ipc, e.endpoints.ipc, model, steps, block, warmup)
            rows += python_rows(d.endpoints.ipc, e.endpoints.ipc, model, steps, block, warmup)
    return rows


GOALS = {"inline": 1.3, "reserve_commit": 1.3, "keep_reserved": 1.3, "pipelined": 1.0, "pipelined_every8": 1.0}


def table(runs: list) -> list:
    lines = ["### 12. Append per decode step (one token × 30 layers × 3 KV heads × 64 dims, ipc; µs per step; "
             "ratio = ÷ one raw ZeroMQ round trip of a 24-byte message through the Swift echo, same run)", "",
             "| client | model | mode | µs per step | echo µs | ratio | goal |", "|---|---|---|---:|---:|---:|---|"]
    rows = {}
    for run in runs:
        for r in run:
            rows.setdefault((r["client"], r["model"], r["name"]), []).append(r)
    for client in ("C", "python"):
        for model in MODELS:
            for name in MODES:
                rs = rows.get((client, model, name))
                if not rs:
                    continue
                us = spread([r["median"] for r in rs])
                echo = spread([r["baseline_median"] for r in rs])
                ratio = spread([r["ratio"] for r in rs])
                goal = GOALS[name]
                piped = name.startswith("pipelined")
                ok = ratio["median"] < goal if piped else ratio["median"] <= goal
                lines.append(f"| {client} | {model} | {name.replace('_', ' ')} | {fmt(us, 1)} | {fmt(echo, 1)} | "
                             f"{fmt(ratio)}× | {'<' if piped else '≤'} {goal}×: {goal_mark(ok)} |")
    return lines
