"""The clients' side of leases, pins, EVICTED and memory-manager events (Python and C).

Two halves:
- Without a daemon: a fake kvd (a ROUTER in a thread answering Hello over a tiny fake arena,
  KeepAlive, Pin, CreateSequence and Stats) and a fake publisher check the wire bytes, the error
  mapping, the automatic keep-alive thread (cadence, one request in flight at a time, prompt
  close, no renewing by a forgotten client, no keeping the interpreter alive) and event decoding;
  the C library's own offline tests (``make -C Clients/c unit``) run here too.
- Against a real daemon with a short lease (1 s) and grace (1 s) and an events endpoint: an idle
  client with keep-alive keeps its sequence, one without loses it (EvictedError), adoption by a
  second client, pin/unpin, LEASE_EXPIRED and ORPHAN_RELEASED events for an abandoned sequence,
  and the C library doing the same (``Clients/c/tests/test_leases.c``).
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest
import zmq

from c_build import build_c_client
from conftest import MODEL_F16, REPO, assert_sequence, make_kv
from kvd import Client, ErrorCode, EvictedError, Events, KvdError
from kvd.errors import error_for
from kvd.v1 import common_pb2, envelope_pb2, memory_pb2

LEASE_S, GRACE_S = 1, 1
# The manager notices an expired lease or grace on its next pass; allow it a few seconds beyond.
RELEASE_DEADLINE_S = LEASE_S + GRACE_S + 8.0
C_DIR = REPO / "Clients" / "c"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)


# =============================================================================================
# A fake kvd

def _make_fake_arena(name: str) -> None:
    """A 4 KiB segment with the header clients check (magic, layout 1, generation 1, one page)."""
    header = struct.pack("<8sIIQQQIIQQQ", b"KVDARENA", 1, 72, 1, 4096, 1024, 1, 0, 1024, 2048, 1024)
    with open("/dev/shm/" + name.lstrip("/"), "wb") as f:
        f.write(header.ljust(4096, b"\0"))


class FakeKvd:
    """Answers on ``endpoint`` in a thread; records requests (``requests``: (monotonic time,
    parsed Request, raw bytes)) and ``overlaps``: requests that arrived while an earlier one of
    the same client was unanswered (with ``reply_delay_s`` > 0 the fake waits before answering,
    watching for one)."""

    def __init__(self, tmp_path, *, lease_ms=0, tenant="alpha", events_endpoint="",
                 reply_delay_s=0.0, drop_keepalive=False, stats_error=0):
        self.endpoint = f"ipc://{tmp_path}/fake-{uuid.uuid4().hex[:8]}.sock"
        self.shm_name = f"/kvd-py-fake-{uuid.uuid4().hex}"
        self.lease_ms, self.tenant, self.events_endpoint = lease_ms, tenant, events_endpoint
        self.reply_delay_s, self.drop_keepalive, self.stats_error = reply_delay_s, drop_keepalive, stats_error
        self.requests, self.overlaps = [], 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        _make_fake_arena(self.shm_name)
        self._sock = zmq.Context.instance().socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self.endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def keepalives(self):
        with self._lock:
            return [t for t, r, _ in self.requests if r.WhichOneof("body") == "keep_alive"]

    def kinds(self):
        with self._lock:
            return [r.WhichOneof("body") for _, r, _ in self.requests]

    def last(self, kind):
        with self._lock:
            for _, r, raw in reversed(self.requests):
                if r.WhichOneof("body") == kind:
                    return r, raw
        return None, None

    def _answer(self, req):
        resp = envelope_pb2.Response()
        resp.header.request_id = req.request_id
        resp.header.protocol_version = 1
        kind = req.WhichOneof("body")
        if kind == "hello":
            h = resp.hello
            h.protocol_version = 1
            h.shm.name, h.shm.size_bytes, h.shm.page_bytes, h.shm.page_count = self.shm_name, 4096, 1024, 1
            h.shm.pages_offset, h.shm.staging_offset, h.shm.staging_bytes = 1024, 2048, 1024
            h.shm.layout_version, h.shm.arena_generation = 1, 1
            h.limits.lease_ms, h.limits.orphan_grace_ms = self.lease_ms, 2 * self.lease_ms
            h.tenant, h.events_endpoint = self.tenant, self.events_endpoint
        elif kind == "keep_alive":
            if self.drop_keepalive:
                return None
            ids = list(req.keep_alive.sequence_ids)
            resp.keep_alive.lease_ms = self.lease_ms
            resp.keep_alive.adopted = max(len(ids) - 1, 0)
            resp.keep_alive.missing.extend(ids[-1:])  # "the last one is unknown"
        elif kind == "pin":
            resp.pin.pinned = req.pin.pinned
            resp.pin.pinned_pages = 3 if req.pin.pinned else 0
        elif kind == "create_sequence":
            resp.create_sequence.sequence_id = req.create_sequence.sequence_id or 77
        elif self.stats_error:
            resp.error.code = self.stats_error
            resp.error.message = "kvd: sequence 5 was released 2 s after its lease expired"
        else:
            resp.stats.total_pages = 1
        return resp

    def _run(self):
        while not self._stop.is_set():
            if not self._sock.poll(20):
                continue
            ident, raw = self._sock.recv_multipart()
            req = envelope_pb2.Request.FromString(raw)
            with self._lock:
                self.requests.append((time.monotonic(), req, raw))
            if self.reply_delay_s and self._sock.poll(int(self.reply_delay_s * 1000)):
                with self._lock:
                    self.overlaps += 1
            resp = self._answer(req)
            if resp is not None:
                self._sock.send_multipart([ident, resp.SerializeToString()])

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close(linger=0)
        os.unlink("/dev/shm/" + self.shm_name.lstrip("/"))


@pytest.fixture
def fake(tmp_path):
    made = []

    def factory(**kw) -> FakeKvd:
        f = FakeKvd(tmp_path, **kw)
        made.append(f)
        return f

    yield factory
    for f in made:
        f.stop()


def _wait_for(cond, timeout_s, step_s=0.01):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return cond()


# =============================================================================================
# Without a daemon: errors and bytes

def test_evicted_code_is_evicted_error():
    assert ErrorCode.EVICTED == common_pb2.ERROR_CODE_EVICTED == 10
    e = error_for(10, "kvd: sequence 5 was evicted", 3)
    assert type(e) is EvictedError and isinstance(e, KvdError)
    assert (e.code, e.raw_code, e.request_id) == (ErrorCode.EVICTED, 10, 3)
    assert "EVICTED" in str(e) and repr(e).startswith("EvictedError(")
    assert type(error_for(2, "x")) is KvdError and error_for(2, "x").code == ErrorCode.NOT_FOUND
    newer = error_for(99, "x")
    assert type(newer) is KvdError and newer.code == ErrorCode.UNSPECIFIED and newer.raw_code == 99


def test_daemon_evicted_reply_raises_evicted_error(fake):
    f = fake(stats_error=common_pb2.ERROR_CODE_EVICTED)
    with Client(f.endpoint, timeout_ms=2000) as c:
        with pytest.raises(EvictedError) as ei:
            c.stats(5)
        assert ei.value.code == ErrorCode.EVICTED and "lease expired" in ei.value.message


def test_keep_alive_and_pin_wire_bytes(fake):
    f = fake(lease_ms=30000)
    with Client(f.endpoint, timeout_ms=2000, keepalive=False) as c:
        r = c.keep_alive(adopt=[5, 2**63])
        req, raw = f.last("keep_alive")
        assert raw == envelope_pb2.Request(
            request_id=req.request_id, protocol_version=1,
            keep_alive=memory_pb2.KeepAliveRequest(sequence_ids=[5, 2**63])).SerializeToString()
        # The same, written out: protocol_version 1; field 21 { field 1 packed: 5, 2^63 }.
        assert raw.endswith(bytes.fromhex("1001" "aa010d" "0a0b05" "808080808080808080" "01"))
        assert (r.lease_ms, r.adopted, r.missing) == (30000, 1, [2**63])
        assert c.keep_alive() == (30000, 0, [])
        assert f.last("keep_alive")[1].endswith(bytes.fromhex("1001" "aa0100"))

        p = c.pin(7)
        assert (p.pinned, p.pinned_pages) == (True, 3)
        assert f.last("pin")[1].endswith(bytes.fromhex("1001" "b20104" "0807" "1001"))
        u = c.unpin(7)
        assert (u.pinned, u.pinned_pages) == (False, 0)
        assert f.last("pin")[1].endswith(bytes.fromhex("1001" "b20102" "0807"))

        assert c.create_sequence("m", 9, pinned=True) == 9
        assert f.last("create_sequence")[0].create_sequence.pinned is True
        c.create_sequence("m")
        assert f.last("create_sequence")[0].create_sequence.pinned is False


# =============================================================================================
# Without a daemon: the keep-alive thread

def _keepalive_threads():
    return [t for t in threading.enumerate() if t.name == "kvd-keepalive"]


def test_keepalive_thread_renews_an_idle_client_every_third_of_the_lease(fake):
    f = fake(lease_ms=300)
    before = len(_keepalive_threads())
    with Client(f.endpoint, timeout_ms=2000) as c:
        assert len(_keepalive_threads()) == before  # nothing before Hello tells the lease
        assert c.hello().limits.lease_ms == 300 and c.lease_ms == 300
        time.sleep(1.0)
        stamps = f.keepalives()
        assert 6 <= len(stamps) <= 12, f"{len(stamps)} KeepAlives in 1 s with a 300 ms lease"
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        assert min(gaps) >= 0.08, f"KeepAlives {min(gaps) * 1000:.0f} ms apart (interval 100 ms)"
        assert c.keepalive_error is None
    assert len(_keepalive_threads()) == before  # close() joined it
    n = len(f.keepalives())
    time.sleep(0.3)
    assert len(f.keepalives()) == n, "a closed client renewed"


def test_no_keepalive_thread_when_disabled_or_without_leases(fake):
    f = fake(lease_ms=300)
    before = len(_keepalive_threads())
    with Client(f.endpoint, timeout_ms=2000, keepalive=False) as c:
        c.hello()
        time.sleep(0.4)
        assert f.keepalives() == [] and len(_keepalive_threads()) == before
    g = fake(lease_ms=0)
    with Client(g.endpoint, timeout_ms=2000) as c:
        c.hello()
        assert c.lease_ms == 0 and len(_keepalive_threads()) == before
        time.sleep(0.2)
        assert g.keepalives() == []


def test_creating_a_sequence_says_hello_first_to_learn_the_lease(fake):
    """Only Hello tells the lease: a client that creates (or adopts) a sequence without having said
    Hello says it first, so its keep-alive runs; with keepalive=False nothing extra is sent."""
    f = fake(lease_ms=300)
    with Client(f.endpoint, timeout_ms=2000) as c:
        assert c.create_sequence("m") == 77
        assert f.kinds()[:2] == ["hello", "create_sequence"] and c.lease_ms == 300
        assert c._keepalive is not None and c._keepalive.is_alive()
        c.create_sequence("m")
        assert f.kinds().count("hello") == 1
    g = fake(lease_ms=300)
    with Client(g.endpoint, timeout_ms=2000, keepalive=False) as c:
        c.create_sequence("m")
        c.keep_alive(adopt=[1])
        assert g.kinds() == ["create_sequence", "keep_alive"]


def test_keepalive_and_calls_never_interleave(fake):
    """The fake answers 15 ms late and counts requests that arrive meanwhile: with the keep-alive
    thread due every 20 ms of idleness and calls separated by gaps around that, any use of the
    socket outside the lock would show as an overlap (or a mismatched reply)."""
    f = fake(lease_ms=60, reply_delay_s=0.015)
    with Client(f.endpoint, timeout_ms=2000) as c:
        c.hello()
        for i in range(40):
            assert c.stats().total_pages == 1
            time.sleep(0.005 + (i % 4) * 0.01)
    assert len(f.keepalives()) > 0, "the thread never sent, so this proved nothing"
    assert f.overlaps == 0, f"{f.overlaps} requests were sent while another was unanswered"


def test_close_does_not_wait_for_an_unanswered_keepalive(fake):
    f = fake(lease_ms=150, drop_keepalive=True)
    c = Client(f.endpoint, timeout_ms=5000)
    c.hello()
    assert _wait_for(lambda: len(f.keepalives()) == 1, 2.0), "no KeepAlive in flight"
    thread = c._keepalive
    t0 = time.monotonic()
    c.close()
    assert time.monotonic() - t0 < 0.5, f"close took {time.monotonic() - t0:.2f} s"
    assert not thread.is_alive()
    time.sleep(0.2)
    assert len(f.keepalives()) == 1, "sent after close"
    with pytest.raises(KvdError) as ei:
        c.stats()
    assert ei.value.code == ErrorCode.FAILED_PRECONDITION


def test_a_forgotten_client_stops_renewing(fake):
    """The thread holds the client weakly: dropping the last reference collects (and closes) it."""
    f = fake(lease_ms=150)
    before = len(_keepalive_threads())
    c = Client(f.endpoint, timeout_ms=2000)
    c.hello()
    assert _wait_for(lambda: len(f.keepalives()) >= 1, 2.0)
    del c
    gc.collect()
    assert _wait_for(lambda: len(_keepalive_threads()) == before, 2.0), "the thread outlived its client"
    n = len(f.keepalives())
    time.sleep(0.3)
    assert len(f.keepalives()) == n


def test_keepalive_thread_does_not_keep_the_interpreter_alive(fake):
    f = fake(lease_ms=300)
    code = ("import sys, kvd; c = kvd.Client(sys.argv[1], timeout_ms=2000); c.hello(); "
            "assert c._keepalive.is_alive(); print('hello done', flush=True)")
    env = dict(os.environ, PYTHONPATH=str(REPO / "Clients" / "python"))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code, f.endpoint], capture_output=True, text=True,
                       timeout=30, env=env)
    assert p.returncode == 0 and "hello done" in p.stdout, p.stderr
    assert time.monotonic() - t0 < 15


# =============================================================================================
# Without a daemon: events

def _event(number, tenant, seq, kind=memory_pb2.Event.KIND_COMPACTED) -> bytes:
    return memory_pb2.Event(sequence_number=number, kind=kind, tenant=tenant, sequence_id=seq,
                            time_unix_ms=1764500000123, generation=4, pages_freed=12,
                            bytes_freed=12 * 4096, method="streamingllm", tokens_before=400,
                            tokens_after=96, reason="arena 93% used, above memory.high 0.90",
                            used_pages=150, limit_pages=160).SerializeToString()


@pytest.fixture
def publisher(tmp_path):
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"ipc://{tmp_path}/pub.sock")
    yield pub
    pub.close(linger=0)


def test_events_decode_and_filter_topics(publisher):
    ep = publisher.getsockopt(zmq.LAST_ENDPOINT).decode()
    with Events(ep, "kvd.alpha", exact_topic=True) as exact, Events(ep, "kvd.alpha") as prefix:
        assert exact.ready(3000) and prefix.ready(3000)
        time.sleep(0.05)  # the subscriptions travel right behind the handshakes
        for topic, number in ((b"kvd.beta", 1), (b"kvd.alphabet", 2), (b"kvd.alpha", 3)):
            publisher.send_multipart([topic, _event(number, topic[4:].decode(), 100 + number)])
        e = exact.recv(2000)
        assert e is not None and (e.sequence_number, e.tenant, e.sequence_id) == (3, "alpha", 103)
        assert (e.kind, e.generation, e.pages_freed, e.bytes_freed, e.method, e.tokens_before,
                e.tokens_after, e.used_pages, e.limit_pages, e.time_unix_ms) == (
            memory_pb2.Event.KIND_COMPACTED, 4, 12, 12 * 4096, "streamingllm", 400, 96, 150, 160,
            1764500000123)
        assert "memory.high" in e.reason
        assert [prefix.recv(2000).sequence_number for _ in range(2)] == [2, 3]
        assert exact.recv(100) is None and prefix.recv(0) is None

        publisher.send_multipart([b"kvd.alpha", b"\xff\xff\xff"])
        with pytest.raises(KvdError) as ei:
            exact.recv(2000)
        assert ei.value.code == ErrorCode.INTERNAL and "undecodable" in ei.value.message
        publisher.send_multipart([b"kvd.alpha", _event(4, "alpha", 1), _event(5, "alpha", 1)])
        with pytest.raises(KvdError):
            exact.recv(2000)
        publisher.send_multipart([b"kvd.alpha", _event(6, "alpha", 1)])
        assert next(iter(exact)).sequence_number == 6
    exact.close()  # idempotent
    with pytest.raises(KvdError):
        exact.recv(0)


def test_events_ready_is_false_without_a_publisher(tmp_path):
    with Events(f"ipc://{tmp_path}/nobody.sock") as ev:
        t0 = time.monotonic()
        assert ev.ready(150) is False
        assert time.monotonic() - t0 < 1.5
        assert ev.recv(50) is None


def test_client_events_uses_hello_endpoint_and_exact_tenant_topic(fake, publisher):
    ep = publisher.getsockopt(zmq.LAST_ENDPOINT).decode()
    f = fake(events_endpoint=ep, tenant="alpha")
    with Client(f.endpoint, timeout_ms=2000) as c, c.events() as ev:
        assert ev.endpoint == ep and ev.topic == b"kvd.alpha" and ev.exact_topic
        assert ev.ready(3000)
        time.sleep(0.05)
        publisher.send_multipart([b"kvd.alphabet", _event(1, "alphabet", 1)])
        publisher.send_multipart([b"kvd.alpha", _event(2, "alpha", 2)])
        assert ev.recv(2000).sequence_number == 2
    g = fake()
    with Client(g.endpoint, timeout_ms=2000) as c:
        with pytest.raises(KvdError) as ei:
            c.events()
        assert ei.value.code == ErrorCode.FAILED_PRECONDITION and "no events" in ei.value.message


# =============================================================================================
# The C library without a daemon

@pytest.fixture(scope="module")
def c_build():
    """``make -C Clients/c`` (library, test programs, examples); -Werror."""
    return build_c_client()


def _c_summary(p: subprocess.CompletedProcess):
    sys.stdout.write(p.stdout)  # shown by pytest on failure
    m = SUMMARY.findall(p.stdout)
    assert m, f"no 'N passed, M failed' line (exit {p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}"
    return int(m[-1][0]), int(m[-1][1])


def test_c_library_offline(c_build):
    p = subprocess.run([str(c_build / "test_memory_unit")], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    passed, failed = _c_summary(p)
    assert p.returncode == 0 and failed == 0 and passed >= 10, p.stdout[-4000:]


# =============================================================================================
# Against a real daemon

def with_leases(cfg: dict, events: bool = True) -> None:
    """``make_daemon`` mutator: 1 s lease, 1 s grace, and an events endpoint next to the socket."""
    endpoint = cfg["server"]["endpoints"][0]
    cfg["memory"] = {
        "lease_seconds": LEASE_S,
        "orphan_grace_seconds": GRACE_S,
        "events_endpoint": endpoint.replace("kvd.sock", "events.sock") if events else "",
    }


@pytest.fixture
def lease_daemon(make_daemon):
    return make_daemon(with_leases)


@pytest.fixture
def observer(lease_daemon):
    """A client that watches without taking part: it owns nothing, so its calls renew nobody, and
    it never names a sequence under test (any request naming a sequence touches it and makes the
    requester its owner), reading only arena-wide Stats and the events."""
    c = Client(lease_daemon.endpoint, timeout_ms=5000, keepalive=False)
    c.hello()
    yield c
    c.close()


@pytest.fixture
def events(observer):
    with observer.events() as ev:
        assert ev.ready(5000), "no connection to the events endpoint"
        time.sleep(0.05)  # the subscription travels right behind the handshake
        yield ev


def _filled(c: Client, seed: int):
    seq = c.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 9, seed=seed)
    c.append(seq, k, v)
    return seq, k, v


def _events_about(ev: Events, seq: int, seconds: float, observer: Client = None):
    """Every event about ``seq`` in the next ``seconds``, and the most orphans the observer's
    arena Stats showed meanwhile."""
    got, orphans = [], 0
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if observer is not None:
            orphans = max(orphans, observer.stats().memory.orphans)
        e = ev.recv(min(100, int(remaining * 1000) + 1))
        if e is not None and e.sequence_id == seq:
            got.append(e)
    return got, orphans


def _until_released(ev: Events, seq: int, observer: Client = None):
    """Events about ``seq`` up to its ORPHAN_RELEASED (fails after RELEASE_DEADLINE_S), and
    whether the observer's arena Stats counted an orphan meanwhile."""
    got, saw_orphan = [], False
    deadline = time.monotonic() + RELEASE_DEADLINE_S
    while not got or got[-1].kind != memory_pb2.Event.KIND_ORPHAN_RELEASED:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{seq} not released after lease + grace; events: {got}"
        if observer is not None:
            saw_orphan |= observer.stats().memory.orphans > 0
        e = ev.recv(min(50, int(remaining * 1000) + 1))
        if e is not None and e.sequence_id == seq:
            got.append(e)
    return got, saw_orphan


def _assert_abandoned_lifecycle(events, tenant: str) -> None:
    assert [e.kind for e in events] == [memory_pb2.Event.KIND_LEASE_EXPIRED,
                                        memory_pb2.Event.KIND_ORPHAN_RELEASED], events
    expired, released = events
    assert released.sequence_number > expired.sequence_number
    assert expired.tenant == released.tenant == tenant
    assert released.pages_freed > 0 and released.bytes_freed > 0 and released.reason
    assert released.time_unix_ms >= expired.time_unix_ms > 1_600_000_000_000


def test_hello_reports_the_lease(observer):
    h = observer.hello()
    assert (h.limits.lease_ms, h.limits.orphan_grace_ms) == (LEASE_S * 1000, GRACE_S * 1000)
    assert h.events_endpoint.startswith("ipc://") and h.events_endpoint.endswith("events.sock")


def test_idle_client_with_keepalive_keeps_its_sequence(lease_daemon, observer, events):
    with Client(lease_daemon.endpoint) as owner:  # keepalive is on by default
        seq, k, v = _filled(owner, seed=1)
        # Idle past lease + grace (+ manager passes): without renewals it would be released (the
        # next test shows it is).
        about, orphans = _events_about(events, seq, LEASE_S + GRACE_S + 1.5, observer)
        assert about == [] and orphans == 0, f"orphaned while its owner idles with keep-alive: {about}"
        assert owner.keepalive_error is None
        assert_sequence(owner, seq, k, v, modes=("inline",))


def test_idle_client_without_keepalive_loses_its_sequence(lease_daemon, observer, events):
    owner = Client(lease_daemon.endpoint, keepalive=False)
    seq, _, _ = _filled(owner, seed=2)
    got, saw_orphan = _until_released(events, seq, observer)
    _assert_abandoned_lifecycle(got, observer.hello().tenant)
    assert saw_orphan, "Stats never counted it as an orphan during the grace period"
    mem = observer.stats().memory
    assert mem.orphans_released == 1 and mem.orphans_released_pages == got[-1].pages_freed
    with pytest.raises(EvictedError) as ei:  # the owner learns it on its next call
        owner.query(seq, mode="metadata")
    assert ei.value.code == ErrorCode.EVICTED and "lease expired" in ei.value.message
    assert owner.create_sequence(MODEL_F16, sequence_id=seq) == seq  # the id may be reused
    owner.close()


def test_second_client_adopts_and_keeps_the_sequence(lease_daemon, observer, events):
    first = Client(lease_daemon.endpoint, keepalive=False)
    seq, k, v = _filled(first, seed=3)
    with Client(lease_daemon.endpoint) as second:
        missing_id = seq ^ 0x5A5A5A5A
        r = second.keep_alive(adopt=[seq, missing_id])
        assert (r.lease_ms, r.adopted, r.missing) == (LEASE_S * 1000, 1, [missing_id])
        first.close()  # the original owner goes away; the adopter's thread renews the lease
        about, orphans = _events_about(events, seq, LEASE_S + GRACE_S + 1.5, observer)
        assert about == [] and orphans == 0, f"orphaned although adopted: {about}"
        assert_sequence(second, seq, k, v, modes=("inline",))


def test_pin_unpin_round_trip(lease_daemon):
    with Client(lease_daemon.endpoint) as c:
        seq, _, _ = _filled(c, seed=4)
        pages = c.stats(seq).sequence.pages
        p = c.pin(seq)
        assert (p.pinned, p.pinned_pages) == (True, pages)
        st = c.stats(seq)
        assert st.sequence.pinned and st.memory.pinned_sequences == 1 and st.memory.pinned_pages == pages
        u = c.unpin(seq)
        assert (u.pinned, u.pinned_pages) == (False, 0)
        assert not c.stats(seq).sequence.pinned
        born_pinned = c.create_sequence(MODEL_F16, pinned=True)
        assert c.stats(born_pinned).sequence.pinned
        assert not c.stats(c.create_sequence(MODEL_F16)).sequence.pinned
        with pytest.raises(KvdError) as ei:
            c.pin(seq ^ 0x5A5A5A5A)
        assert ei.value.code == ErrorCode.NOT_FOUND


def test_closing_a_client_stops_renewal_and_events_report_it(lease_daemon, observer, events):
    owner = Client(lease_daemon.endpoint)  # keep-alive on, until close()
    seq, _, _ = _filled(owner, seed=5)
    owner.close()
    got, _ = _until_released(events, seq)
    tenant = observer.hello().tenant
    _assert_abandoned_lifecycle(got, tenant)
    assert events.topic == f"kvd.{tenant}".encode()
    with pytest.raises(EvictedError):
        observer.stats(seq)


def test_a_killed_client_stops_renewing(lease_daemon, observer, events):
    """A process that dies with keep-alive running (SIGKILL: no close, no finalizers)."""
    code = ("import sys, time, kvd; c = kvd.Client(sys.argv[1]); "
            "print(c.create_sequence(sys.argv[2]), flush=True); time.sleep(60)")
    env = dict(os.environ, PYTHONPATH=str(REPO / "Clients" / "python"))
    proc = subprocess.Popen([sys.executable, "-c", code, lease_daemon.endpoint, MODEL_F16],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        seq = int(proc.stdout.readline())
        about, _ = _events_about(events, seq, LEASE_S * 1.5)  # alive and idle: its thread renews
        assert about == [], f"orphaned while its owner lives: {about}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    got, _ = _until_released(events, seq)
    assert [e.kind for e in got] == [memory_pb2.Event.KIND_LEASE_EXPIRED,
                                     memory_pb2.Event.KIND_ORPHAN_RELEASED], got
    with pytest.raises(EvictedError):
        observer.stats(seq)


def test_client_events_needs_an_events_endpoint(make_daemon):
    d = make_daemon(lambda cfg: with_leases(cfg, events=False))
    with Client(d.endpoint) as c:
        assert c.hello().events_endpoint == ""
        with pytest.raises(KvdError) as ei:
            c.events()
        assert ei.value.code == ErrorCode.FAILED_PRECONDITION


def test_c_library_against_the_daemon(c_build, lease_daemon):
    p = subprocess.run([str(c_build / "test_leases"), lease_daemon.endpoint], capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    passed, failed = _c_summary(p)
    assert p.returncode == 0 and failed == 0 and passed >= 3, p.stdout[-4000:]


# =============================================================================================
# The C library's memory-manager figures (kvd_client_memory_stats, kvd_client_sequence_lease)
# against a real daemon, compared with the Python client's Stats of the same daemon. The C side is
# ``Clients/c/tests/stats_probe.c``: one call per run, printed as ``name=value`` lines.

# MemoryStats fields that stay put while nothing happens on the daemon (reclaim_passes and
# events_published may move between two reads: a background pass, another tenant's event).
C_MEMORY_STABLE = ("reservations_aborted", "reservations_aborted_pages", "orphans_released",
                   "orphans_released_pages", "compactions", "compactions_pages", "evictions",
                   "evictions_pages", "synchronous_reclaims", "last_reclaim_us",
                   "last_reclaim_reached_low", "orphans", "pinned_sequences", "pinned_pages",
                   "high", "low")
C_MEMORY_GROWING = ("reclaim_passes", "events_published")
C_LEASE_FIELDS = ("sequence_id", "idle_ms", "lease_remaining_ms", "orphan", "pinned", "bytes",
                  "manager_compactions", "pages", "tokens_held", "length", "generation")


def _probe(c_build, endpoint: str, *args: str, want: str = "KVD_OK") -> dict:
    """Run ``stats_probe ENDPOINT ARGS...``; its ``name=value`` lines as numbers (``result`` and
    ``error`` as text). Fails unless the call's result is ``want``."""
    p = subprocess.run([str(c_build / "stats_probe"), endpoint, *args], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = {}
    for line in p.stdout.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            continue
        if name in ("result", "error"):
            out[name] = value
        else:
            out[name] = float(value) if name in ("high", "low") else int(value)
    assert out.get("result") == want and p.returncode == (0 if want == "KVD_OK" else 1), (
        f"stats_probe {' '.join(args)}: exit {p.returncode}, want {want}\n{p.stdout}{p.stderr}")
    return out


def _c_memory(c_build, endpoint: str) -> dict:
    m = _probe(c_build, endpoint, "memory")
    missing = set(C_MEMORY_STABLE + C_MEMORY_GROWING) - set(m)
    assert not missing, f"stats_probe printed no {sorted(missing)}"
    return m


def _assert_c_memory_between(c: dict, before, after) -> None:
    """The C figures, read between two Python reads of the same tenant's MemoryStats."""
    for name in C_MEMORY_STABLE:
        b, a = getattr(before, name), getattr(after, name)
        assert b == a, f"{name} moved during the comparison ({b} -> {a}); the test is racy"
        assert c[name] == b, f"C {name} = {c[name]}, Python {b}"
    for name in C_MEMORY_GROWING:
        assert getattr(before, name) <= c[name] <= getattr(after, name), (
            f"C {name} = {c[name]} not within Python's {getattr(before, name)}..{getattr(after, name)}")


def test_c_memory_stats_match_python_and_count_pins(c_build, lease_daemon, observer):
    with Client(lease_daemon.endpoint) as owner:
        c = _c_memory(c_build, lease_daemon.endpoint)
        assert 0 < c["low"] < c["high"] <= 1, c
        assert (c["pinned_sequences"], c["pinned_pages"], c["orphans"]) == (0, 0, 0), c
        seq, _, _ = _filled(owner, seed=11)
        born = owner.create_sequence(MODEL_F16, pinned=True)
        k, v = make_kv(MODEL_F16, 5, seed=12)
        owner.append(born, k, v)
        owner.pin(seq)
        pages = {s: owner.stats(s).sequence.pages for s in (seq, born)}
        assert all(pages.values()), pages

        before = observer.stats().memory
        c = _c_memory(c_build, lease_daemon.endpoint)
        after = observer.stats().memory
        _assert_c_memory_between(c, before, after)
        assert (c["pinned_sequences"], c["pinned_pages"]) == (2, pages[seq] + pages[born]), c

        owner.unpin(seq)
        before = observer.stats().memory
        c = _c_memory(c_build, lease_daemon.endpoint)
        _assert_c_memory_between(c, before, observer.stats().memory)
        assert (c["pinned_sequences"], c["pinned_pages"]) == (1, pages[born]), c


def test_c_sequence_lease_matches_python(c_build, lease_daemon):
    with Client(lease_daemon.endpoint) as owner:  # keep-alive on: the lease stays renewed
        seq, _, _ = _filled(owner, seed=13)
        owner.pin(seq)
        page_bytes = owner.stats().page_bytes
        time.sleep(0.4)  # nothing names the sequence meanwhile (KeepAlive does not touch it)
        c = _probe(c_build, lease_daemon.endpoint, "lease", str(seq))
        assert set(C_LEASE_FIELDS) <= set(c), c
        py = owner.stats(seq).sequence  # also takes the sequence back from the probe's connection
        for name in ("sequence_id", "pages", "tokens_held", "length", "generation", "bytes",
                     "manager_compactions"):
            assert c[name] == getattr(py, name), f"C {name} = {c[name]}, Python {getattr(py, name)}"
        assert (c["pinned"], c["orphan"]) == (int(py.pinned), int(py.orphan)) == (1, 0), c
        assert c["length"] == 9 and c["pages"] > 0 and c["bytes"] == c["pages"] * page_bytes, c
        # The probe's Stats renewed the lease first; idle_ms is the time before it.
        assert LEASE_S * 1000 // 2 < c["lease_remaining_ms"] <= LEASE_S * 1000, c
        assert 350 <= c["idle_ms"] < 5000, f"idle {c['idle_ms']} ms after 400 ms untouched"
        assert py.idle_ms < c["idle_ms"] and py.idle_ms < 350, (
            f"Python idle {py.idle_ms} ms: the probe's request did not touch the sequence")
        assert 0 < py.lease_remaining_ms <= LEASE_S * 1000

        missing = _probe(c_build, lease_daemon.endpoint, "lease", str(seq ^ 0x5A5A5A5A),
                         want="KVD_ERR_NOT_FOUND")
        assert "not found" in missing["error"], missing
        owner.release(seq)
        _probe(c_build, lease_daemon.endpoint, "lease", str(seq), want="KVD_ERR_NOT_FOUND")


def test_c_memory_stats_count_a_vanished_c_client(c_build, lease_daemon, observer, events):
    """A C client without keep-alive creates a sequence and exits: during the grace period both
    clients count one orphan, after it one orphan released with the pages the event names."""
    start = _c_memory(c_build, lease_daemon.endpoint)
    assert start["orphans_released"] == 0 and start["orphans"] == 0, start
    seq = _probe(c_build, lease_daemon.endpoint, "abandon", "9")["sequence_id"]

    got, orphan_seen = [], None
    deadline = time.monotonic() + RELEASE_DEADLINE_S
    while not got or got[-1].kind != memory_pb2.Event.KIND_ORPHAN_RELEASED:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{seq} not released after lease + grace; events: {got}"
        e = events.recv(min(50, int(remaining * 1000) + 1))
        if e is None or e.sequence_id != seq:
            continue
        got.append(e)
        if e.kind == memory_pb2.Event.KIND_LEASE_EXPIRED:
            # The grace period (1 s) has just begun: read both clients' figures now.
            before = observer.stats().memory
            orphan_seen = _c_memory(c_build, lease_daemon.endpoint)
            after = observer.stats().memory
    _assert_abandoned_lifecycle(got, observer.hello().tenant)
    assert orphan_seen is not None, "no LEASE_EXPIRED event"
    _assert_c_memory_between(orphan_seen, before, after)
    assert orphan_seen["orphans"] == 1 and orphan_seen["orphans_released"] == 0, orphan_seen

    before = observer.stats().memory
    c = _c_memory(c_build, lease_daemon.endpoint)
    _assert_c_memory_between(c, before, observer.stats().memory)
    assert (c["orphans"], c["orphans_released"], c["orphans_released_pages"]) == (
        0, 1, got[-1].pages_freed), c
    assert c["orphans_released_pages"] > 0
    assert c["events_published"] >= start["events_published"] + 2, (start, c)
    gone = _probe(c_build, lease_daemon.endpoint, "lease", str(seq), want="KVD_ERR_EVICTED")
    assert "lease" in gone["error"], gone


def test_c_memory_stats_after_a_reclaim_match_python(c_build, make_daemon):
    """Above memory.high the manager compresses idle sequences down to low: the C figures of the
    episode (compactions, last_reclaim_us, reached low) and of a compressed sequence match Python's."""
    from memory_helpers import HEADS, filled, memory_config, wait_until

    d = make_daemon(lambda cfg: memory_config(cfg, cfg["server"]["endpoints"][0], evict=False))
    with Client(d.endpoint) as c:
        s = c.stats()
        idle, per = [], HEADS * 64 // 4
        while (s.total_pages - s.free_pages) + per <= 0.95 * s.total_pages:  # above high at once
            idle.append(filled(c, 64, seed=2000 + len(idle))[0])
            s = c.stats()
        wait_until(lambda: (lambda s: s.memory.last_reclaim_reached_low and s.memory.compactions > 0
                            and s.total_pages - s.free_pages <= s.memory.low * s.total_pages)(c.stats()),
                   5.0, "a reclaim to memory.low")
        before = c.stats().memory
        cm = _c_memory(c_build, d.endpoint)
        after = c.stats().memory
        _assert_c_memory_between(cm, before, after)
        assert cm["last_reclaim_us"] > 0 and cm["last_reclaim_reached_low"] == 1, cm
        assert cm["compactions"] >= 1 and cm["compactions_pages"] > 0 and cm["evictions"] == 0, cm
        assert cm["reclaim_passes"] >= 1, cm
        assert (cm["high"], cm["low"]) == (0.9, 0.8), cm

        compacted = [q for q in idle if c.stats(q).sequence.manager_compactions > 0]
        assert len(compacted) == cm["compactions"], (compacted, cm)
        lease = _probe(c_build, d.endpoint, "lease", str(compacted[0]))
        py = c.stats(compacted[0]).sequence
        assert (lease["manager_compactions"], lease["generation"], lease["tokens_held"], lease["pages"],
                lease["length"]) == (py.manager_compactions, py.generation, py.tokens_held, py.pages,
                                     py.length) == (1, 2, py.tokens_held, py.pages, 64), (lease, py)
        assert py.tokens_held < HEADS * 64, "the compressed sequence holds every token"
