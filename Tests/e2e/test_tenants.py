"""Tenants side by side: authentication in Hello, isolation of sequences and of shared memory,
quotas, reservations owned by their connection, unguessable ids, bounded request-id memory.

Two tenants with tokens and their own segments; no open tenant, so an unauthenticated connection
can do nothing. Every test ends with the other tenant's sequence bit-exact.
"""

from __future__ import annotations

import mmap
import os
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from conftest import (MODEL_F16, Client, ErrorCode, KvdError, START_TIMEOUT_S, assert_sequence,
                      make_kv, parse_response, raw_roundtrip)
from kvd.v1 import envelope_pb2

TOKEN_A = "alpha-token-0123456789abcdef"
TOKEN_B = "bravo-token-0123456789abcdef"
B_PAGE_QUOTA = 24
B_SEQUENCE_QUOTA = 3


def two_tenants(cfg: dict) -> None:
    tag = uuid.uuid4().hex[:12]
    cfg["tenants"] = [
        {"name": "alpha", "token": TOKEN_A,
         "shm": {"name": f"/kvd-test-a-{tag}", "size_bytes": "1MiB", "staging_bytes": "256KiB"}},
        {"name": "bravo", "token": TOKEN_B,
         "shm": {"name": f"/kvd-test-b-{tag}", "size_bytes": "1MiB", "staging_bytes": "256KiB"},
         "quotas": {"pages": B_PAGE_QUOTA, "sequences": B_SEQUENCE_QUOTA}},
    ]


def start_authenticated(d) -> None:
    """Start and wait until the daemon answers (an anonymous Hello is refused once it is up)."""
    d.start(wait=False)
    deadline = time.monotonic() + START_TIMEOUT_S
    with Client(d.endpoint, timeout_ms=200) as c:
        while True:
            assert d.proc.poll() is None, f"kvd exited during start:\n{d.stderr()}"
            try:
                c.hello()
                pytest.fail("an anonymous Hello was accepted by a server without an open tenant")
            except KvdError as e:
                if e.code == ErrorCode.PERMISSION_DENIED:
                    return
                assert time.monotonic() < deadline, f"kvd did not come up: {e}\n{d.stderr()}"


@pytest.fixture
def tenants(make_daemon):
    d = make_daemon(two_tenants, start=False)
    start_authenticated(d)
    yield d
    for t in d.config["tenants"]:
        path = Path("/dev/shm") / t["shm"]["name"].lstrip("/")
        d.stop()
        assert not path.exists(), f"{path} left behind after SIGTERM"


def connect(d, tenant: str, token: str) -> Client:
    c = Client(d.endpoint, tenant=tenant, token=token)
    c.hello()
    return c


class Victim:
    """Tenant alpha's sequence with known K/V; check() asserts it is bit-exact."""

    def __init__(self, c: Client):
        self.c = c
        self.seq = c.create_sequence(MODEL_F16)
        self.k, self.v = make_kv(MODEL_F16, 9, seed=77)
        c.append(self.seq, self.k, self.v)

    def check(self) -> None:
        st = self.c.stats(self.seq).sequence
        assert (st.length, st.generation) == (9, 1)
        assert_sequence(self.c, self.seq, self.k, self.v, modes=("pages", "inline"))


def raw_request(endpoint: str, build, identity: bytes | None = None) -> envelope_pb2.Response:
    req = envelope_pb2.Request(request_id=1)
    build(req)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    if identity is not None:
        s.setsockopt(zmq.ROUTING_ID, identity)
    try:
        s.connect(endpoint)
        s.send(req.SerializeToString())
        assert s.poll(5000, zmq.POLLIN), "no reply"
        return parse_response(s.recv())
    finally:
        s.close()


def test_authentication(tenants):
    d = tenants
    # No credential, a wrong token and an unknown tenant are refused alike (names are not probed).
    with Client(d.endpoint) as anon:
        with pytest.raises(KvdError) as e:
            anon.hello()
        assert e.value.code == ErrorCode.PERMISSION_DENIED and "token" in str(e.value)
    messages = set()
    for tenant, token in [("alpha", TOKEN_B), ("nobody", TOKEN_A), ("alpha", "")]:
        with Client(d.endpoint, tenant=tenant, token=token) as c:
            with pytest.raises(KvdError) as e:
                c.hello()
            assert e.value.code == ErrorCode.PERMISSION_DENIED
            messages.add(str(e.value))
            assert TOKEN_A not in str(e.value) and TOKEN_B not in str(e.value)
    assert len(messages) == 1, messages
    # A request before any Hello is refused too, whatever it names.
    r = raw_request(d.endpoint, lambda q: q.stats.SetInParent())
    assert r.error.code == ErrorCode.PERMISSION_DENIED and "Hello" in r.error.message
    r = raw_request(d.endpoint, lambda q: setattr(q.create_sequence, "model", MODEL_F16))
    assert r.error.code == ErrorCode.PERMISSION_DENIED
    # Hello names the bound tenant and hands out that tenant's own segment.
    with connect(d, "alpha", TOKEN_A) as a, connect(d, "bravo", TOKEN_B) as b:
        ha, hb = a.hello(), b.hello()
        assert (ha.tenant, hb.tenant) == ("alpha", "bravo")
        assert ha.shm.name != hb.shm.name
        assert (hb.limits.quota_pages, hb.limits.quota_sequences) == (B_PAGE_QUOTA, B_SEQUENCE_QUOTA)
        for h in (ha, hb):
            mode = stat.S_IMODE(os.stat("/dev/shm/" + h.shm.name.lstrip("/")).st_mode)
            assert mode == 0o600, oct(mode)


def test_isolation_through_requests(tenants):
    d = tenants
    with connect(d, "alpha", TOKEN_A) as a, connect(d, "bravo", TOKEN_B) as b:
        victim = Victim(a)
        q = np.zeros((2, 4, 2, 8), np.float16)
        attempts = {
            "query": lambda: b.query(victim.seq),
            "stats": lambda: b.stats(victim.seq),
            "append": lambda: b.append(victim.seq, *make_kv(MODEL_F16, 2, seed=1)),
            "zero-copy append": lambda: b.append(victim.seq, *make_kv(MODEL_F16, 2, seed=1), zero_copy=True),
            "reserve": lambda: b.reserve(victim.seq, 4),
            "commit": lambda: b.commit(victim.seq, 1, 1),
            "compact": lambda: b.compact(victim.seq, "streamingllm", sinks=1, recent=1),
            "compact with queries": lambda: b.compact(victim.seq, "snapkv", queries=q, budget=1),
            "stage": lambda: b.stage(victim.seq, 64),
            "rank_layers": lambda: b.rank_layers([victim.seq]),
            "release": lambda: b.release(victim.seq),
        }
        for what, call in attempts.items():
            with pytest.raises(KvdError) as e:
                call()
            assert e.value.code == ErrorCode.NOT_FOUND, f"{what}: {e.value}"
        # Same explicit id in both tenants: separate sequences, and no ALREADY_EXISTS to enumerate by.
        mine = b.create_sequence(MODEL_F16, sequence_id=victim.seq)
        assert mine == victim.seq
        b.append(mine, *make_kv(MODEL_F16, 3, seed=5))
        assert b.stats(mine).sequence.length == 3
        # Arena-wide Stats count only the caller's tenant.
        assert a.stats().sequences == 1 and b.stats().sequences == 1
        # A label naming the other tenant is an attempt to act as it.
        with pytest.raises(KvdError) as e:
            b.create_sequence(MODEL_F16, tenant="alpha")
        assert e.value.code == ErrorCode.PERMISSION_DENIED
        b.release(mine)
        victim.check()


def test_isolation_of_shared_memory(tenants):
    """Bravo's segment never holds alpha's bytes, and alpha's data sits only in alpha's segment."""
    d = tenants
    with connect(d, "alpha", TOKEN_A) as a, connect(d, "bravo", TOKEN_B) as b:
        victim = Victim(a)
        b_seq = b.create_sequence(MODEL_F16)
        b.append(b_seq, *make_kv(MODEL_F16, 9, seed=78), zero_copy=True)
        needle = victim.k[0, 0].tobytes()  # one head's keys: 9 tokens x 8 dims of f16
        name_a, name_b = a.hello().shm.name, b.hello().shm.name
        with open("/dev/shm/" + name_a.lstrip("/"), "rb") as fa, open("/dev/shm/" + name_b.lstrip("/"), "rb") as fb:
            seg_a = mmap.mmap(fa.fileno(), 0, prot=mmap.PROT_READ)
            seg_b = mmap.mmap(fb.fileno(), 0, prot=mmap.PROT_READ)
            try:
                first_page = victim.k[0, 0, :4].tobytes()
                assert seg_a.find(first_page) >= 0
                assert seg_b.find(first_page) < 0 and seg_b.find(needle[:32]) < 0
            finally:
                seg_a.close()
                seg_b.close()
        b.release(b_seq)
        victim.check()


def test_quotas(tenants):
    d = tenants
    with connect(d, "alpha", TOKEN_A) as a, connect(d, "bravo", TOKEN_B) as b:
        victim = Victim(a)
        seqs = [b.create_sequence(MODEL_F16) for _ in range(B_SEQUENCE_QUOTA)]
        with pytest.raises(KvdError) as e:
            b.create_sequence(MODEL_F16)
        assert e.value.code == ErrorCode.RESOURCE_EXHAUSTED and "quotas.sequences" in str(e.value)
        # Pages: 4 heads x 4-token pages; 24 pages = 6 pages per head = 24 tokens.
        b.append(seqs[0], *make_kv(MODEL_F16, 20, seed=3))
        for zero_copy in (False, True):
            with pytest.raises(KvdError) as e:
                b.append(seqs[1], *make_kv(MODEL_F16, 8, seed=4), zero_copy=zero_copy)
            assert e.value.code == ErrorCode.RESOURCE_EXHAUSTED and "quotas.pages" in str(e.value)
        assert b.stats(seqs[1]).sequence.length == 0
        # Alpha has no quota and its own segment: unaffected by bravo being at its limit.
        extra = a.create_sequence(MODEL_F16)
        a.append(extra, *make_kv(MODEL_F16, 40, seed=6))
        # Freed pages count again.
        b.release(seqs[0])
        b.append(seqs[1], *make_kv(MODEL_F16, 8, seed=4))
        victim.check()


def test_reservation_belongs_to_its_connection(tenants):
    d = tenants
    with connect(d, "alpha", TOKEN_A) as a, connect(d, "alpha", TOKEN_A) as a2:
        seq = a.create_sequence(MODEL_F16)
        res = a.reserve(seq, 4)
        for abort in (False, True):
            with pytest.raises(KvdError) as e:
                a2.commit(seq, res.reservation_id, 4, abort=abort)
            assert e.value.code == ErrorCode.PERMISSION_DENIED and "another connection" in str(e.value)
        assert a.stats(seq).sequence.reserved_tokens == 4
        a.commit(seq, res.reservation_id, 4)
        assert a.stats(seq).sequence.length == 4


def test_sequence_ids_are_not_sequential(tenants):
    with connect(tenants, "alpha", TOKEN_A) as a:
        ids = [a.create_sequence(MODEL_F16) for _ in range(8)]
        gaps = [abs(x - y) for x, y in zip(ids, ids[1:])]
        assert min(gaps) > 1 << 20, ids
        for s in ids:
            a.release(s)


def test_routing_identity_reuse_does_not_inherit_the_tenant(tenants):
    """A client bound by Hello leaves; another process connecting with the same routing identity
    is not bound (libzmq's Peer-Address carries the peer's pid on ipc)."""
    d = tenants
    identity = b"kvd-test-identity"
    with connect(d, "alpha", TOKEN_A) as a:
        victim = Victim(a)
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.setsockopt(zmq.ROUTING_ID, identity)
        s.connect(d.endpoint)
        hello = envelope_pb2.Request(request_id=1)
        hello.hello.tenant, hello.hello.token = "alpha", TOKEN_A
        s.send(hello.SerializeToString())
        assert s.poll(5000) and parse_response(s.recv()).hello.tenant == "alpha"
        s.close()
        time.sleep(0.3)  # the ROUTER drops the identity once the connection is gone
        script = textwrap.dedent(f"""
            import sys, zmq
            sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / 'Clients' / 'python')!r})
            from kvd.v1 import envelope_pb2
            s = zmq.Context().socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, {identity!r})
            s.connect({d.endpoint!r})
            r = envelope_pb2.Request(request_id=2)
            r.stats.sequence_id = {victim.seq}
            s.send(r.SerializeToString())
            assert s.poll(5000), "no reply"
            out = envelope_pb2.Response(); out.ParseFromString(s.recv())
            print(out.error.code, out.error.message)
        """)
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        code = int(p.stdout.split()[0])
        assert code == ErrorCode.PERMISSION_DENIED, p.stdout
        victim.check()


def test_unix_uid_restriction(make_daemon):
    """A tenant that lists unix_uids refuses an ipc peer of another user (we run as ourselves)."""
    def cfg(c):
        two_tenants(c)
        c["tenants"][1]["unix_uids"] = [os.getuid() + 4242]
    d = make_daemon(cfg, start=False)
    start_authenticated(d)
    with Client(d.endpoint, tenant="bravo", token=TOKEN_B) as b:
        with pytest.raises(KvdError) as e:
            b.hello()
        assert e.value.code == ErrorCode.PERMISSION_DENIED and "unix_uids" in str(e.value)
    with connect(d, "alpha", TOKEN_A) as a:
        assert a.hello().tenant == "alpha"
    d.stop()


def test_request_id_window_is_bounded(make_daemon):
    """Ids are remembered per connection for a window of ids and an idle time, not forever."""
    def cfg(c):
        c["server"]["request_ids"] = {"window": 16, "idle_seconds": 1}
    d = make_daemon(cfg)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(d.endpoint)

    def stats(rid: int) -> envelope_pb2.Response:
        r = envelope_pb2.Request(request_id=rid)
        r.stats.SetInParent()
        s.send(r.SerializeToString())
        assert s.poll(5000)
        return parse_response(s.recv())

    try:
        assert stats(7).HasField("stats")
        assert stats(7).error.code == ErrorCode.ALREADY_EXISTS
        for rid in range(100, 116):  # 16 newer ids push 7 out of the window
            assert stats(rid).HasField("stats")
        assert stats(7).HasField("stats")
        assert stats(115).error.code == ErrorCode.ALREADY_EXISTS
        time.sleep(2.5)  # quiet past idle_seconds: the connection's ids are forgotten
        stats(1)  # any request runs the sweep
        assert stats(115).HasField("stats")
    finally:
        s.close()


def test_refused_creations_do_not_use_up_max_sequences(kvd, client):
    """A CreateSequence refused for a duplicate id, a foreign tenant label or an unknown model leaves
    the server-wide sequence count alone (found by the fuzzer: duplicate ids leaked a slot each)."""
    from conftest import MAX_SEQUENCES
    seq = client.create_sequence(MODEL_F16, sequence_id=4242)
    for _ in range(3 * MAX_SEQUENCES):
        with pytest.raises(KvdError) as e:
            client.create_sequence(MODEL_F16, sequence_id=4242)
        assert e.value.code == ErrorCode.ALREADY_EXISTS
        with pytest.raises(KvdError):
            client.create_sequence("no-such-model")
    made = [client.create_sequence(MODEL_F16) for _ in range(MAX_SEQUENCES - 1)]
    assert client.stats().sequences == MAX_SEQUENCES
    with pytest.raises(KvdError) as e:
        client.create_sequence(MODEL_F16)
    assert e.value.code == ErrorCode.RESOURCE_EXHAUSTED and "max_sequences" in str(e.value)
    for s in made + [seq]:
        client.release(s)
    assert client.stats().sequences == 0
