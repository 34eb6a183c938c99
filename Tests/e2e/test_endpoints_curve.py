"""Endpoints and their security: CURVE on tcp (Python and C clients), refused clients, loopback-only
plain tcp, the ipc socket file (a live daemon is never displaced, a stale file is replaced, mode
from server.ipc_mode), bad key files, and `kvd keygen`.

Every key is generated at run time. Sockets are only ever bound to 127.0.0.1 / ::1, except in the
one test that checks `allow_insecure_tcp`, which runs the daemon in its own network namespace (no
interface but a down loopback: nothing can reach it). The refused non-loopback configurations are
refused before anything is bound.
"""

from __future__ import annotations

import copy
import os
import socket
import stat
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from conftest import KVD_BIN, MODEL_F16, Daemon, assert_sequence, make_kv
from kvd import Client, ErrorCode, KvdError, load_curve_key, load_curve_keypair
from test_c_client import TEST_BIN, c_build, run_c, _summary  # noqa: F401  (c_build is a fixture)

REFUSED_TIMEOUT_MS = 800


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def keygen(directory: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(KVD_BIN), "keygen", "--out", str(directory), "--name", name],
                          capture_output=True, text=True, timeout=20)


@pytest.fixture
def keys(tmp_path, kvd_bin) -> Path:
    """server.{key,pub}, client.{key,pub} (listed for tenant "alpha"), other.{key,pub} (unlisted)."""
    d = tmp_path / "keys"
    d.mkdir()
    for name in ("server", "client", "other"):
        p = keygen(d, name)
        assert p.returncode == 0, p.stderr
    return d


def run_to_exit(d: Daemon, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run a daemon that is expected to refuse to start."""
    try:
        return subprocess.run([str(KVD_BIN), "--config", str(d.config_path)], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kvd kept running on:\n{d.config_path.read_text()}")


def with_tenants(cfg: dict, alpha_keys) -> None:
    """An open tenant on the default segment (the test fixtures say Hello without credentials) and
    tenant "alpha" identified by CURVE keys, on a segment of its own."""
    shm = cfg["arena"]["shm_name"]
    cfg["tenants"] = [
        {"name": "open", "shm": {"name": shm}},
        {"name": "alpha", "curve_public_keys": list(alpha_keys), "shm": {"name": shm + "-alpha"}},
    ]


@pytest.fixture
def curve_daemon(make_daemon, keys):
    """A daemon with the ipc endpoint (NULL) first and a CURVE tcp endpoint on 127.0.0.1."""
    port = free_port()
    tcp = f"tcp://127.0.0.1:{port}"

    def mutate(cfg):
        cfg["server"]["endpoints"].append(tcp)
        cfg["server"]["curve"] = {"secret_key_file": str(keys / "server.key")}
        with_tenants(cfg, [load_curve_key(keys / "client.pub").decode()])

    d = make_daemon(mutate)
    d.tcp = tcp
    yield d
    alpha = Path("/dev/shm") / (d.shm_name.lstrip("/") + "-alpha")
    if d.stop() == 0 and alpha.exists():
        alpha.unlink()


def curve_client(d: Daemon, keys: Path, client: str = "client", server: str = "server",
                 timeout_ms: int = 5000) -> Client:
    pair = load_curve_keypair(keys / client)
    return Client(d.tcp, timeout_ms=timeout_ms, tenant="alpha",
                  curve_server_key=load_curve_key(keys / f"{server}.pub"),
                  curve_public_key=pair.public, curve_secret_key=pair.secret)


def assert_no_reply(c: Client) -> None:
    with c:
        with pytest.raises(KvdError) as e:
            c.hello()
    assert e.value.code == ErrorCode.UNAVAILABLE, e.value


# ---------------------------------------------------------------------------------------------
# CURVE

def test_curve_roundtrip_python(curve_daemon, keys):
    with curve_client(curve_daemon, keys) as c:
        c.hello()
        seq = c.create_sequence(MODEL_F16)
        k, v = make_kv(MODEL_F16, 11, seed=301)
        c.append(seq, k[:, :, :6], v[:, :, :6])
        c.append(seq, k[:, :, 6:], v[:, :, 6:], zero_copy=True)
        assert_sequence(c, seq, k, v)
        c.release(seq)


def test_refused_clients_get_no_reply_and_the_daemon_stays_up(curve_daemon, keys):
    d = curve_daemon
    assert_no_reply(Client(d.tcp, timeout_ms=REFUSED_TIMEOUT_MS))                       # no CURVE
    assert_no_reply(curve_client(d, keys, client="other", timeout_ms=REFUSED_TIMEOUT_MS))  # unlisted
    assert_no_reply(curve_client(d, keys, server="other", timeout_ms=REFUSED_TIMEOUT_MS))  # wrong server key
    assert d.proc.poll() is None, d.stderr()
    other_pub = load_curve_key(keys / "other.pub").decode()
    assert "refused a connection" in d.stderr() and other_pub in d.stderr(), d.stderr()
    with curve_client(d, keys) as c:
        c.hello()
    with Client(d.endpoint, timeout_ms=5000) as c:  # ipc stays NULL: no keys needed
        c.hello()


def test_ipc_endpoint_is_not_curve(curve_daemon, keys):
    pair = load_curve_keypair(keys / "client")
    c = Client(curve_daemon.endpoint, timeout_ms=REFUSED_TIMEOUT_MS,
               curve_server_key=load_curve_key(keys / "server.pub"),
               curve_public_key=pair.public, curve_secret_key=pair.secret)
    assert_no_reply(c)


def test_curve_roundtrip_and_refusals_from_c(c_build, curve_daemon, keys):
    p = run_c(["curve", curve_daemon.tcp, keys / "server.pub", keys / "client", keys / "other"],
              timeout=60)
    assert p.returncode == 0 and _summary(p.stdout) == (2, 0), p.stdout + p.stderr
    assert curve_daemon.proc.poll() is None, curve_daemon.stderr()


def test_client_keeps_curve_keys_after_a_timeout(curve_daemon, keys):
    """A timeout replaces the socket; the new one must carry the same keys."""
    with curve_client(curve_daemon, keys, timeout_ms=2000) as c:
        c.hello()
        c._reset_socket()  # what a timeout does
        assert c.stats().total_pages > 0


def test_python_client_rejects_partial_or_malformed_keys(keys):
    pair = load_curve_keypair(keys / "client")
    with pytest.raises(ValueError, match="together"):
        Client("tcp://127.0.0.1:1", curve_server_key=pair.public)
    with pytest.raises(ValueError, match="curve_secret_key"):
        Client("tcp://127.0.0.1:1", curve_server_key=pair.public, curve_public_key=pair.public,
               curve_secret_key="~" * 40)
    (keys / "broken.pub").write_text("not a key\n")
    (keys / "broken.key").write_text(pair.secret.decode() + "\n")
    with pytest.raises(ValueError):
        load_curve_keypair(keys / "broken")


# ---------------------------------------------------------------------------------------------
# tcp without CURVE

@pytest.mark.parametrize("host", ["0.0.0.0", "*", "[::]"])
def test_non_loopback_tcp_without_curve_is_refused_before_binding(make_daemon, host):
    endpoint = f"tcp://{host}:{free_port()}"
    d = make_daemon(lambda cfg: cfg["server"]["endpoints"].append(endpoint), start=False)
    p = run_to_exit(d)
    assert p.returncode == 2, p.stderr
    assert endpoint in p.stderr and "allow_insecure_tcp" in p.stderr, p.stderr
    assert "serving on" not in p.stderr
    assert not d.ipc_path.exists() and not d.shm_path.exists(), "refused after binding"


def test_loopback_tcp_without_curve_is_allowed(make_daemon):
    tcp4, tcp6 = f"tcp://127.0.0.1:{free_port()}", f"tcp://[::1]:{free_port(socket.AF_INET6, '::1')}"
    d = make_daemon(lambda cfg: cfg["server"]["endpoints"].extend([tcp4, tcp6]))
    for ep in (tcp4, tcp6):
        with Client(ep, timeout_ms=5000) as c:
            assert c.hello().shm.name == d.shm_name


def test_non_loopback_tcp_allowed_with_the_flag(make_daemon):
    """Runs the daemon in a network namespace of its own, so the all-interfaces bind reaches
    nothing; it is driven through its ipc socket (Unix sockets on a path work across namespaces)."""
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace (unshare -rn): {probe.stderr!r}")
    endpoint = f"tcp://0.0.0.0:{free_port()}"

    def mutate(cfg):
        cfg["server"]["endpoints"].append(endpoint)
        cfg["server"]["allow_insecure_tcp"] = True

    d = make_daemon(mutate, start=False)
    with open(d.log_path, "wb") as err:
        d.proc = subprocess.Popen(["unshare", "-rn", str(KVD_BIN), "--config", str(d.config_path)],
                                  stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    d.wait_ready()
    assert "allow_insecure_tcp" in d.stderr() and endpoint in d.stderr(), d.stderr()
    assert f"serving on {d.endpoint}, {endpoint}" in d.stderr(), d.stderr()


# ---------------------------------------------------------------------------------------------
# The ipc socket file

def test_second_daemon_on_the_same_ipc_path_refuses_and_the_first_keeps_serving(make_daemon):
    d1 = make_daemon()
    before = os.stat(d1.ipc_path)
    cfg = copy.deepcopy(d1.config)
    cfg["arena"]["shm_name"] = f"/kvd-test-{uuid.uuid4().hex}"
    workdir = d1.workdir / "second"
    workdir.mkdir()
    d2 = Daemon(workdir, cfg)
    p = run_to_exit(d2)
    assert p.returncode == 1, p.stderr
    assert str(d1.ipc_path) in p.stderr and "another process" in p.stderr, p.stderr
    assert not d2.shm_path.exists(), "the refused daemon left its segment"
    after = os.stat(d1.ipc_path)
    assert (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns), "socket replaced"
    with d1.client() as c:
        c.hello()


def test_stale_socket_file_is_replaced(make_daemon):
    d = make_daemon(start=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(d.ipc_path))  # closed without unlink: what a killed daemon leaves
    d.start()
    assert "removed a stale socket file" in d.stderr(), d.stderr()
    with d.client() as c:
        c.hello()


def test_a_file_that_is_not_a_socket_is_left_alone(make_daemon):
    d = make_daemon(start=False)
    d.ipc_path.write_text("precious\n")
    p = run_to_exit(d)
    assert p.returncode == 1 and "is not a socket" in p.stderr, p.stderr
    assert d.ipc_path.read_text() == "precious\n"
    assert not d.shm_path.exists()


@pytest.mark.parametrize("mode", [None, "0660", "0640"])
def test_ipc_socket_file_mode(make_daemon, mode):
    def mutate(cfg):
        if mode is not None:
            cfg["server"]["ipc_mode"] = mode
    d = make_daemon(mutate)
    assert stat.S_IMODE(os.stat(d.ipc_path).st_mode) == int(mode or "0600", 8)
    with d.client() as c:
        c.hello()


# ---------------------------------------------------------------------------------------------
# Keys

def test_keygen(tmp_path, kvd_bin):
    p = keygen(tmp_path, "node")
    assert p.returncode == 0, p.stderr
    secret, public = tmp_path / "node.key", tmp_path / "node.pub"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub = public.read_text().strip()
    assert p.stdout.strip() == pub and len(pub) == 40
    assert zmq.curve_public(secret.read_text().strip().encode()).decode() == pub
    q = subprocess.run([str(kvd_bin), "keygen", "--public-of", str(secret)], capture_output=True,
                       text=True, timeout=20)
    assert q.returncode == 0 and q.stdout.strip() == pub, q.stderr
    # never overwrites a key
    first = secret.read_text()
    again = keygen(tmp_path, "node")
    assert again.returncode != 0 and "exists" in again.stderr, again.stderr
    assert secret.read_text() == first
    # two runs, two different pairs
    assert keygen(tmp_path, "node2").stdout.strip() != pub


@pytest.mark.parametrize("problem", ["missing", "garbage", "directory"])
def test_bad_server_key_file_is_a_config_error(make_daemon, keys, tmp_path, problem):
    bad = {"missing": tmp_path / "nope.key", "garbage": tmp_path / "garbage.key",
           "directory": tmp_path}[problem]
    if problem == "garbage":
        bad.write_text("this is not a key\n")

    def mutate(cfg):
        cfg["server"]["endpoints"].append(f"tcp://127.0.0.1:{free_port()}")
        cfg["server"]["curve"] = {"secret_key_file": str(bad)}

    p = run_to_exit(make_daemon(mutate, start=False))
    assert p.returncode == 2, p.stderr
    assert "secret_key_file" in p.stderr and str(bad) in p.stderr, p.stderr
    assert "this is not a key" not in p.stderr


def test_malformed_tenant_key_is_a_config_error(make_daemon, keys):
    def mutate(cfg):
        cfg["server"]["curve"] = {"secret_key_file": str(keys / "server.key")}
        with_tenants(cfg, ["~" * 40])

    p = run_to_exit(make_daemon(mutate, start=False))
    assert p.returncode == 2 and "curve_public_keys" in p.stderr and "alpha" in p.stderr, p.stderr
