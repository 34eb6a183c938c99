"""The Python client across a restart of a durable kvd (docs/PROTOCOL.md, "Restarts"): every
reply carries the daemon's instance id; when it changes the client says Hello again, resends a
request refused only because the new process did not know its tenant binding yet, and takes back
the sequences it created (KeepAlive adopt), so none of them runs out of lease as an orphan.
"""
from __future__ import annotations

import signal
import time
import uuid

import numpy as np

from conftest import MODEL_F16, ErrorCode, Client, assert_sequence, make_kv
from memory_helpers import error_code

TOKEN = "restart-token-0123456789abcdef"


def durable(cfg: dict, tenant: bool = False) -> None:
    workdir = cfg["server"]["endpoints"][0][len("ipc://"):].rsplit("/", 1)[0]
    cfg["durability"] = {"enabled": True, "directory": workdir}
    # Short leases: a sequence nobody takes back is an orphan after 1 s and released 1 s later.
    cfg["memory"] = {"compress_policy": "", "evict": False, "lease_seconds": 1, "orphan_grace_seconds": 1,
                     "interval_ms": 50}
    if tenant:
        cfg["tenants"] = [{"name": "t", "token": TOKEN,
                           "shm": {"name": f"/kvd-test-t-{uuid.uuid4().hex[:12]}", "size_bytes": "1MiB",
                                   "staging_bytes": "256KiB"}}]


def test_the_client_rejoins_and_keeps_its_idle_sequences(make_daemon):
    d = make_daemon(durable)
    c = d.client()
    bare = Client(d.endpoint, keepalive=False)  # the control: never rejoins by itself
    bare.hello()
    k, v = make_kv(MODEL_F16, 9, seed=1)
    idle, busy = c.create_sequence(MODEL_F16), c.create_sequence(MODEL_F16)
    c.append(idle, k, v)
    c.append(busy, k, v)
    orphan = bare.create_sequence(MODEL_F16)
    bare.append(orphan, k, v)
    assert c.hello().durable
    first = c.hello().instance_id
    d.stop(signal.SIGKILL)
    d.start()
    k2, v2 = make_kv(MODEL_F16, 3, seed=2)
    c.append(busy, k2, v2)  # the same client object, nothing done by hand
    assert c.hello().instance_id != first
    time.sleep(3.0)  # past lease + grace: an untaken sequence is gone by now
    assert_sequence(c, idle, k, v)
    assert_sequence(c, busy, np.concatenate([k, k2], axis=2), np.concatenate([v, v2], axis=2))
    assert not c.stats(idle).sequence.orphan
    with d.client() as other:
        assert error_code(lambda: other.stats(orphan)).code in (ErrorCode.NOT_FOUND, ErrorCode.EVICTED)
    c.close()
    bare.close()


def test_a_token_tenant_client_goes_on_after_the_restart(make_daemon):
    d = make_daemon(lambda cfg: durable(cfg, tenant=True), start=False)
    d.start(wait=False)
    deadline = time.monotonic() + 30
    while True:
        try:
            c = Client(d.endpoint, tenant="t", token=TOKEN, timeout_ms=500)
            c.hello()
            break
        except Exception:  # noqa: BLE001 - not up yet
            assert time.monotonic() < deadline, d.stderr()
            time.sleep(0.05)
    c.timeout_ms = 5000
    seq = c.create_sequence(MODEL_F16)
    k, v = make_kv(MODEL_F16, 5, seed=3)
    c.append(seq, k, v)
    d.stop(signal.SIGKILL)
    d.start(wait=False)
    deadline = time.monotonic() + 30
    while True:  # the first call after the restart: refused as unbound, rejoined, resent
        try:
            r = c.stats(seq)
            break
        except Exception as e:  # noqa: BLE001 - the daemon may still be starting
            assert "not bound" not in str(e), f"the client did not rejoin: {e}"
            assert time.monotonic() < deadline, d.stderr()
    assert r.sequence.length == 5
    c.append(seq, k, v)
    assert c.stats(seq).sequence.length == 10
    c.close()
