"""The crash test of docs/DURABILITY.md: 8 clients append (inline and Reserve/Commit), compact and
release their own sequences while kvd is SIGKILLed at random moments, 50 times, and restarted on
the same config each time. After every restart:
- every sequence whose last request was answered is exactly as it was then (K, V, positions,
  log-weights, generation, page and token counts);
- a sequence whose last request was cut off by the kill is either as before that request or as
  after it (length / generation say which), never anything else;
- no acknowledged release comes back;
- the pages in use are exactly the pages the sequences hold (nothing leaked, nothing lost).
"""
from __future__ import annotations

import random
import signal
import threading
import time

import numpy as np
import pytest

from conftest import MODEL_SEED_F32, ErrorCode, KvdError, add_seed_models, sequence_snapshot

KILLS = 50
WORKERS = 8
STATS_PAGES = 2  # index of pages in sequence_snapshot


def durable(cfg: dict) -> None:
    add_seed_models(cfg)
    cfg["server"]["max_sequences"] = 512
    cfg["durability"] = {"enabled": True, "directory": cfg["server"]["endpoints"][0][6:].rsplit("/", 1)[0],
                         "checkpoint_bytes": "256KiB"}  # several checkpoints during the run
    cfg["memory"] = {"compress_policy": "", "evict": False, "lease_seconds": 0}


class Worker:
    """One client's sequences and what it knows about each."""

    def __init__(self, index: int):
        self.index = index
        self.rng = random.Random(index)
        self.next_id = (index + 1) << 40
        self.known: dict[int, tuple] = {}     # id -> snapshot after its last answered request
        self.released: set[int] = set()
        self.pending = None                   # (op, id, before) of a request cut off by a kill
        self.interrupted: dict[str, int] = {}

    def kv(self, n: int):
        a = np.random.default_rng(self.rng.randrange(1 << 30)).standard_normal((4, 2, n, 16)).astype(np.float32)
        return a, a[::-1].copy()

    def step(self, c) -> None:
        live = list(self.known)
        op = self.rng.choices(["create", "append", "commit", "compact", "release"], [2, 4, 3, 2, 1])[0]
        if op == "create" or not live:
            op, seq, before = "create", self.next_id, None
            self.next_id += 1
        else:
            seq = self.rng.choice(live)
            before = self.known[seq]
            if op == "compact" and before[3] < 2 * 8 * 40:  # tokens held: too few to compact
                op = "append"
        self.pending = (op, seq, before)
        if op == "create":
            c.create_sequence(MODEL_SEED_F32, sequence_id=seq)
        elif op in ("append", "commit"):
            k, v = self.kv(self.rng.randint(1, 40))
            c.append(seq, k, v, zero_copy=op == "commit")
        elif op == "compact":
            if self.rng.random() < 0.5:
                c.compact(seq, "streamingllm", sinks=4, recent=self.rng.randint(4, 24))
            else:
                c.compact(seq, "balancekv", sinks=4, recent=4, itrs=1)
        else:
            c.release(seq)
        # Still pending until what it did is written down here (the snapshot is a request too).
        if op == "release":
            del self.known[seq]
            self.released.add(seq)
        else:
            self.known[seq] = sequence_snapshot(c, seq)
        self.pending = None

    def run(self, endpoint: str, stop: threading.Event, errors: list) -> None:
        from kvd import Client
        try:
            with Client(endpoint, timeout_ms=700, keepalive=False) as c:
                while not stop.is_set():
                    self.step(c)
        except KvdError as e:
            if e.code != ErrorCode.UNAVAILABLE:
                errors.append(f"worker {self.index}: {e!r}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"worker {self.index}: {e!r}")

    def check(self, c) -> None:
        """After a restart: what this worker knows holds; a cut-off request went all or nothing."""
        if self.pending is not None:
            op, seq, before = self.pending
            self.interrupted[op] = self.interrupted.get(op, 0) + 1
            self.pending = None
            try:
                now = sequence_snapshot(c, seq)
            except KvdError as e:
                assert e.code == ErrorCode.NOT_FOUND, e
                assert op in ("create", "release"), f"{op} on {seq} lost the sequence"
                self.known.pop(seq, None)
                if op == "release":
                    self.released.add(seq)
                now = None
            if now is not None:
                if op == "create":
                    assert now[1] == 0
                elif op in ("append", "commit"):
                    assert now[1] >= before[1]
                    if now[1] == before[1]:
                        # Rolled back: the same, minus any reservation pages a kill left open.
                        assert now[0] == before[0] and now[3:] == before[3:], f"{op} on {seq}: torn"
                elif op == "compact":
                    if now[0] == before[0]:
                        assert now == before, f"compact on {seq} half applied"
                    else:
                        assert now[0] == before[0] + 1 and now[1] == before[1]
                else:
                    assert now == before, f"release on {seq} half applied"
                self.known[seq] = now
        for seq, want in self.known.items():
            got = sequence_snapshot(c, seq)
            assert got == want, f"worker {self.index}: sequence {seq} differs after the restart"
        for seq in self.released:
            with pytest.raises(KvdError) as e:
                c.stats(seq)
            assert e.value.code == ErrorCode.NOT_FOUND


def test_fifty_kills_lose_nothing_committed(make_daemon):
    d = make_daemon(durable)
    workers = [Worker(i) for i in range(WORKERS)]
    rng = random.Random(2026)
    for kill in range(KILLS):
        stop, errors = threading.Event(), []
        threads = [threading.Thread(target=w.run, args=(d.endpoint, stop, errors)) for w in workers]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.05, 0.4))
        d.stop(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors
        d.start()
        with d.client() as c:
            for w in workers:
                w.check(c)
            s = c.stats()
            held = sum(c.stats(seq).sequence.pages for w in workers for seq in w.known)
            assert s.sequences == sum(len(w.known) for w in workers), f"kill {kill}: stray sequences"
            assert s.total_pages - s.free_pages == held, f"kill {kill}: pages in use != pages held"
            # Keep the segment from filling up over the run.
            for w in workers:
                while len(w.known) > 6:
                    seq = next(iter(w.known))
                    c.release(seq)
                    del w.known[seq]
                    w.released.add(seq)
    cut = {}
    for w in workers:
        for op, n in w.interrupted.items():
            cut[op] = cut.get(op, 0) + n
    print(f"requests cut off by the {KILLS} kills: {cut}")
    assert sum(cut.values()) >= KILLS, cut  # most kills land mid-request for several clients
    assert cut.get("compact", 0) > 0 and cut.get("commit", 0) > 0, cut
