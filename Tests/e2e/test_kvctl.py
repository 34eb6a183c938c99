"""kvctl, the admin command line (docs/KVCTL.md), end to end: the built binary against a real
daemon, every verb in text and --json, checked against what the daemon holds (through the Python
client); the admin credential's refusals; error replies, usage errors and an absent daemon with
their exit codes (1, 2, 3).
"""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import (KVD_BIN, MODEL_F16, MODEL_F32, TINY, Client, ErrorCode, KvdError, assert_sequence,
                      make_kv)
from memory_helpers import error_code, memory_config, wait_until

KVCTL_BIN = KVD_BIN.parent / "kvctl"
HEADS = TINY["layers"] * TINY["kv_heads"]
ADMIN_TOKEN = "admin-token-0123456789abcdef"
TOKEN_A = "alpha-token-0123456789abcdef"
TOKEN_B = "bravo-token-0123456789abcdef"


@pytest.fixture(scope="module", autouse=True)
def kvctl_built():
    if not KVCTL_BIN.is_file():
        pytest.fail(f"kvctl not found at {KVCTL_BIN}; run `swift build --product kvctl`")


def kvctl(d, *args, json_out=False, endpoint=None, timeout=10.0) -> subprocess.CompletedProcess:
    """Runs kvctl against daemon `d` (its endpoint unless `endpoint`); never checks the status."""
    cmd = [str(KVCTL_BIN), *args, "--endpoint", endpoint or d.endpoint]
    if json_out:
        cmd.append("--json")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ok_json(d, *args) -> dict:
    r = kvctl(d, *args, json_out=True)
    assert r.returncode == 0, f"kvctl {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}"
    return json.loads(r.stdout)


def ok_text(d, *args) -> str:
    r = kvctl(d, *args)
    assert r.returncode == 0, f"kvctl {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}"
    assert r.stdout.strip(), "no output"
    return r.stdout


def refused(d, *args, code: str, exit_code: int = 1) -> tuple[str, dict]:
    """Runs the command twice: text (message on stderr) and --json (error document on stdout)."""
    r = kvctl(d, *args)
    assert r.returncode == exit_code, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    assert r.stderr.startswith("kvctl: ") and code in r.stderr, r.stderr
    j = kvctl(d, *args, json_out=True)
    assert j.returncode == exit_code
    doc = json.loads(j.stdout)["error"]
    assert doc["code"] == code and doc["exit_code"] == exit_code, doc
    return r.stderr, doc


def filled(c: Client, tokens: int, seed: int, model: str = MODEL_F16) -> int:
    seq = c.create_sequence(model)
    k, v = make_kv(model, tokens, seed=seed)
    c.append(seq, k, v)
    return seq


# ---------------------------------------------------------------------------------------------
# status, sequences, sequence

def test_status(kvd):
    with kvd.client() as c:
        filled(c, 9, seed=1)
        filled(c, 20, seed=2)
        st = c.stats()
        doc = ok_json(kvd, "status")
        assert doc["tenant"] == "default" and doc["sequences"] == 2 and doc["protocol_version"] == 1
        # Nobody authenticates on this daemon (one open tenant, no admin token): everyone is admin.
        assert doc["admin"] is True and doc["tenants"] == ["default"]
        assert doc["pages"]["total"] == st.total_pages and doc["pages"]["used"] == st.total_pages - st.free_pages
        assert doc["pages"]["used"] == HEADS * 3 + HEADS * 5  # ceil(9/4), ceil(20/4) pages per head
        assert {m["name"] for m in doc["models"]} == {"tiny-f16", "tiny-bf16", "tiny-f32", "wide-f32"}
        assert doc["remote"]["enabled"] is False and doc["durable"] in (True, False)
        text = ok_text(kvd, "status")
        assert "sequences: 2" in text and "tenant:    default (admin; tenants: default)" in text and "tiny-bf16" in text
        assert f"{doc['pages']['used']} used" in text


def test_sequences_lists_exactly_the_tenants_sequences(kvd):
    with kvd.client() as c:
        made = {filled(c, n, seed=n): n for n in (5, 12, 33)}
        c.pin(next(iter(made)))
        doc = ok_json(kvd, "sequences")
        assert doc["tenant"] == "default"
        listed = {s["id"]: s for s in doc["sequences"]}
        assert set(listed) == set(made)
        assert [s["id"] for s in doc["sequences"]] == sorted(made)
        for seq, n in made.items():
            s = listed[seq]
            assert (s["model"], s["length"], s["tokens_held"], s["generation"]) == (MODEL_F16, n, n * HEADS, 1)
            assert s["pages"] == HEADS * -(-n // 4) and s["last_method"] == ""
            assert s["pinned"] == (seq == next(iter(made)))
        # The Python client's call returns the same listing.
        py = c.list_sequences()
        assert [(s.sequence_id, s.tokens_held) for s in py.sequences] == [(s["id"], s["tokens_held"]) for s in doc["sequences"]]
        text = ok_text(kvd, "sequences")
        lines = text.splitlines()
        assert lines[0] == "tenant default: 3 sequences"
        assert lines[1].split()[:4] == ["id", "model", "length", "tokens"]
        rows = {int(line.split()[0]): line.split() for line in lines[2:]}
        assert set(rows) == set(made)
        for seq, n in made.items():
            assert rows[seq][1:4] == [MODEL_F16, str(n), str(n * HEADS)]
        c.release(filled(c, 4, seed=99))  # released: not listed
        assert len(ok_json(kvd, "sequences")["sequences"]) == 3


def test_sequences_empty(kvd):
    assert ok_json(kvd, "sequences") == {"tenant": "default", "sequences": []}
    assert ok_text(kvd, "sequences").strip() == "tenant default: 0 sequences"


def test_sequence_show_per_head_positions_and_last_method(kvd):
    with kvd.client() as c:
        seq = filled(c, 30, seed=3)
        c.compact(seq, "streamingllm", sinks=4, recent=8)
        doc = ok_json(kvd, "sequence", str(seq))
        assert doc["id"] == seq and doc["length"] == 30 and doc["generation"] == 2
        assert doc["last_method"] == "streamingllm" and doc["tokens_held"] == 12 * HEADS
        assert len(doc["heads"]) == HEADS and doc["aliases"] == []
        for h in doc["heads"]:
            assert h["tokens"] == 12 and h["position_runs"] == [[0, 3], [22, 29]]
            assert h["log_weights"] is False and h["aliased"] is False and h["owner_layer"] is None
        assert {(h["layer"], h["head"]) for h in doc["heads"]} == {(l, h) for l in range(2) for h in range(2)}
        # `sequences ID` is the same document.
        again = ok_json(kvd, "sequences", str(seq))
        assert again["heads"] == doc["heads"] and again["id"] == seq
        text = ok_text(kvd, "sequence", str(seq))
        assert "last_method: streamingllm" in text and "aliases:     none" in text
        rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["0"], ["1"])]
        assert len(rows) == HEADS and all(r[2:5] == ["12", "0-3,22-29", "no"] for r in rows)


def test_sequence_show_log_weights_and_aliases(kvd):
    with kvd.client() as c:
        seq = filled(c, 64, seed=4, model=MODEL_F32)
        c.compact(seq, "balancekv", sinks=4, recent=4, block=32, itrs=2)
        doc = ok_json(kvd, "sequence", str(seq))
        assert doc["last_method"] == "balancekv"
        assert any(h["log_weights"] for h in doc["heads"])
        shared = filled(c, 8, seed=5, model=MODEL_F32)
        c.compact(shared, "kvsharer", alias_map="1:0")
        doc = ok_json(kvd, "sequence", str(shared))
        assert doc["aliases"] == [{"layer": 1, "owner": 0}]
        assert {h["owner_layer"] for h in doc["heads"] if h["aliased"]} == {0}
        assert "aliases:     1->0" in ok_text(kvd, "sequence", str(shared))


# ---------------------------------------------------------------------------------------------
# policies and reload

POLICIES = {"short": {"method": "streamingllm", "params": {"sinks": 1, "recent": 3}}}


def with_policies(cfg: dict) -> None:
    cfg["policies"] = json.loads(json.dumps(POLICIES))
    cfg["rules"] = [{"when": {"length_above": 40}, "policy": "short"}]


def test_policies_and_reload(make_daemon):
    d = make_daemon(with_policies)
    doc = ok_json(d, "policies")
    assert doc["policies"] == [{"name": "short", "method": "streamingllm", "params": {"sinks": "1", "recent": "3"}}]
    assert doc["rules"] == [{"index": 1, "condition": "length_above 40", "policy": "short"}]
    assert {m["model"]: m["default_policy"] for m in doc["models"]} == {m: "" for m in ("tiny-f16", "tiny-bf16", "tiny-f32", "wide-f32")}
    text = ok_text(d, "policies")
    assert "short" in text and "length_above 40" in text
    # Edit the config, reload: the new policy and rule are in force.
    from conftest import to_yaml
    d.config["policies"]["long"] = {"method": "knorm", "params": {"budget": 2}}
    d.config["rules"].insert(0, {"when": {"arena_used_above": 0.5}, "policy": "long"})
    d.config_path.write_text(to_yaml(d.config) + "\n")
    out = ok_json(d, "reload")
    assert out == {"policies": ["long", "short"], "rules": 2}
    doc = ok_json(d, "policies")
    assert [p["name"] for p in doc["policies"]] == ["long", "short"]
    assert [(r["index"], r["policy"]) for r in doc["rules"]] == [(1, "long"), (2, "short")]
    assert ok_text(d, "reload").startswith("reloaded: 2 policies (long, short), 2 rules")
    # A config that does not load is refused whole; the policies in force stay.
    d.config_path.write_text(d.config_path.read_text().replace('"knorm"', '"no-such-method"'))
    message, _ = refused(d, "reload", code="FAILED_PRECONDITION")
    assert "no-such-method" in message and "keeping the current policies" in message
    assert [p["name"] for p in ok_json(d, "policies")["policies"]] == ["long", "short"]


def test_python_client_calls_match_kvctl(make_daemon):
    d = make_daemon(with_policies)
    with d.client() as c:
        p = c.list_policies()
        doc = ok_json(d, "policies")
        assert [(x.name, x.method, dict(kv.split("=", 1) for kv in x.params)) for x in p.policies] == [
            (x["name"], x["method"], x["params"]) for x in doc["policies"]]
        assert [(r.index, r.condition, r.policy) for r in p.rules] == [(r["index"], r["condition"], r["policy"]) for r in doc["rules"]]
        assert list(c.reload().policies) == ["short"]  # no credential configured: every connection is admin
        seq = filled(c, 12, seed=30)
        out = c.evict(seq)
        assert (out.sequence_id, out.pages_freed, out.tokens_held, out.offloaded) == (seq, HEADS * 3, 12 * HEADS, False)
        assert error_code(lambda: c.stats(seq)).code == ErrorCode.EVICTED
        assert c.list_sequences().sequences == []


# ---------------------------------------------------------------------------------------------
# compact, release, pin, evict, restore

def test_compact_method_policy_and_params(make_daemon):
    d = make_daemon(with_policies)
    with d.client() as c:
        a, b, e = filled(c, 40, seed=6), filled(c, 40, seed=7), filled(c, 40, seed=8)
        doc = ok_json(d, "compact", str(a), "--method", "streamingllm", "--param", "sinks=2", "--param", "recent=6")
        assert doc["tokens_before"] == 40 * HEADS and doc["tokens_after"] == 8 * HEADS
        assert (doc["method"], doc["policy"], doc["chosen_by"], doc["generation"]) == ("streamingllm", "", "request", 2)
        assert doc["pages_freed"] == HEADS * (10 - 2)
        assert c.stats(a).sequence.tokens_held == 8 * HEADS
        text = ok_text(d, "compact", str(b), "--policy", "short")
        assert f"compacted {b} with short (streamingllm)" in text and f"{40 * HEADS} -> {4 * HEADS} tokens" in text
        assert c.stats(b).sequence.tokens_held == 4 * HEADS
        assert ok_json(d, "sequences", str(b))["last_method"] == "short (streamingllm)"
        # A float parameter typed from Hello's declaration; a wrong one named by kvd.
        message, _ = refused(d, "compact", str(e), "--method", "streamingllm", "--param", "sinks=-1", code="INVALID_ARGUMENT")
        assert "sinks" in message
        assert c.stats(e).sequence.tokens_held == 40 * HEADS  # unchanged


def test_release(kvd):
    with kvd.client() as c:
        a, b = filled(c, 10, seed=9), filled(c, 10, seed=10)
        doc = ok_json(kvd, "release", str(a))
        assert doc == {"sequence_id": a, "pages_freed": HEADS * 3, "bytes_freed": HEADS * 3 * 4096}
        assert error_code(lambda: c.stats(a)).code == ErrorCode.NOT_FOUND
        assert ok_text(kvd, "release", str(b)) == f"released {b}: {HEADS * 3} pages ({HEADS * 3 * 4096} bytes) freed\n"
        assert c.list_sequences().sequences == []
        refused(kvd, "release", str(b), code="NOT_FOUND")


def test_pin_and_unpin(kvd):
    with kvd.client() as c:
        seq = filled(c, 8, seed=11)
        assert ok_json(kvd, "pin", str(seq)) == {"sequence_id": seq, "pinned": True, "pinned_pages": HEADS * 2}
        assert c.stats(seq).sequence.pinned
        assert ok_json(kvd, "unpin", str(seq)) == {"sequence_id": seq, "pinned": False, "pinned_pages": 0}
        assert not c.stats(seq).sequence.pinned
        assert ok_text(kvd, "pin", str(seq)).startswith(f"pinned {seq}")
        assert ok_text(kvd, "unpin", str(seq)).startswith(f"unpinned {seq}")


def test_evict(kvd):
    with kvd.client() as c:
        a, b, keep = filled(c, 10, seed=12), filled(c, 10, seed=13), filled(c, 10, seed=14)
        k, v = make_kv(MODEL_F16, 10, seed=14)
        doc = ok_json(kvd, "evict", str(a))
        assert doc == {"sequence_id": a, "pages_freed": HEADS * 3, "bytes_freed": HEADS * 3 * 4096,
                       "offloaded": False, "tokens_held": 10 * HEADS}
        err = error_code(lambda: c.stats(a))
        assert err.code == ErrorCode.EVICTED and "admin" in err.message
        assert ok_text(kvd, "evict", str(b)).startswith(f"evicted {b}: {10 * HEADS} tokens")
        assert c.stats().memory.evictions == 2
        # Pinned: refused, nothing changes.
        c.pin(keep)
        message, _ = refused(kvd, "evict", str(keep), code="FAILED_PRECONDITION")
        assert "unpin" in message
        assert_sequence(c, keep, k, v)
        refused(kvd, "evict", str(a), code="EVICTED")


def test_evict_offloads_and_restore_brings_it_back(make_daemon, tmp_path):
    from redis_helpers import RedisNode
    redis = RedisNode(tmp_path).start()
    try:
        def mutate(cfg):
            memory_config(cfg, cfg["server"]["endpoints"][0], compress_policy="", high=0.9, low=0.8)
            cfg["remote"] = {"enabled": True, "nodes": [redis.address], "key_prefix": "kvdtest:",
                             "connect_timeout_ms": 200, "command_timeout_ms": 500}
        d = make_daemon(mutate)
        with d.client() as c:
            k, v = make_kv(MODEL_F16, 16, seed=15)
            seq = c.create_sequence(MODEL_F16)
            c.append(seq, k, v)
            other = filled(c, 16, seed=16)
            assert ok_json(d, "evict", str(seq))["offloaded"] is True
            assert "offloaded to the remote tier" in ok_text(d, "evict", str(other))
            wait_until(lambda: c.stats().remote.queued == 0 and c.stats().remote.offloaded == 2, 10.0, "the offloads to ship")
            assert ok_json(d, "status")["remote"]["offloaded"] == 2
            doc = ok_json(d, "restore", str(seq))
            assert doc["sequence_id"] == seq and doc["from_remote"] is True and doc["length"] == 16
            assert_sequence(c, seq, k, v)
            assert ok_text(d, "restore", str(other)).startswith(f"restored {other}: length 16")
            refused(d, "restore", str(seq), code="ALREADY_EXISTS")
    finally:
        redis.stop()


def test_restore_without_a_remote_tier_says_so(kvd):
    message, _ = refused(kvd, "restore", "12345", code="FAILED_PRECONDITION")
    assert "no remote tier" in message


# ---------------------------------------------------------------------------------------------
# keygen

def test_keygen_is_kvds(tmp_path):
    r = subprocess.run([str(KVCTL_BIN), "keygen", "--out", str(tmp_path), "--name", "ops"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    public = r.stdout.strip()
    assert len(public) == 40 and (tmp_path / "ops.pub").read_text().strip() == public
    assert (tmp_path / "ops.key").stat().st_mode & 0o777 == 0o600
    same = subprocess.run([str(KVD_BIN), "keygen", "--public-of", str(tmp_path / "ops.key")], capture_output=True, text=True)
    assert same.stdout.strip() == public
    again = subprocess.run([str(KVCTL_BIN), "keygen", "--out", str(tmp_path), "--name", "ops"], capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr


# ---------------------------------------------------------------------------------------------
# the admin credential

def tenants_with_admin(admin: bool):
    def mutate(cfg):
        tag = uuid.uuid4().hex[:12]
        cfg["tenants"] = [
            {"name": "alpha", "token": TOKEN_A, "shm": {"name": f"/kvd-test-a-{tag}", "size_bytes": "1MiB", "staging_bytes": "256KiB"}},
            {"name": "bravo", "token": TOKEN_B, "shm": {"name": f"/kvd-test-b-{tag}", "size_bytes": "1MiB", "staging_bytes": "256KiB"}},
        ]
        if admin:
            cfg["admin"] = {"token_file": "admin.token"}
    return mutate


def start_with_tenants(make_daemon, admin: bool):
    d = make_daemon(tenants_with_admin(admin), start=False)
    (d.workdir / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (d.workdir / "alpha.token").write_text(TOKEN_A + "\n")
    d.start(wait=False)
    deadline = time.monotonic() + 20
    while True:
        assert d.proc.poll() is None, d.stderr()
        r = kvctl(d, "status", "--tenant", "alpha", "--token", TOKEN_A, "--timeout", "0.5")
        if r.returncode == 0:
            return d
        assert time.monotonic() < deadline, r.stderr + d.stderr()
        time.sleep(0.1)


def test_admin_acts_for_the_tenant_it_names(make_daemon):
    d = start_with_tenants(make_daemon, admin=True)
    admin = ("--admin-token-file", str(d.workdir / "admin.token"))
    with Client(d.endpoint, tenant="alpha", token=TOKEN_A) as a, Client(d.endpoint, tenant="bravo", token=TOKEN_B) as b:
        assert a.hello().admin is False
        mine = filled(a, 8, seed=20)
        theirs = {filled(b, 8, seed=21), filled(b, 12, seed=22)}
        # An admin lists, reloads and evicts in the tenant it names, and only there.
        doc = ok_json(d, "sequences", "--tenant", "bravo", *admin)
        assert doc["tenant"] == "bravo" and {s["id"] for s in doc["sequences"]} == theirs
        status = ok_json(d, "status", "--tenant", "bravo", *admin)
        assert status["admin"] is True and status["tenants"] == ["alpha", "bravo"]
        assert ok_json(d, "status", "--tenant", "alpha", "--token", TOKEN_A)["tenants"] == []
        assert ok_json(d, "reload", "--tenant", "bravo", *admin)["rules"] == 0
        victim = min(theirs)
        assert ok_json(d, "evict", str(victim), "--tenant", "bravo", *admin)["sequence_id"] == victim
        assert error_code(lambda: b.stats(victim)).code == ErrorCode.EVICTED
        refused(d, "evict", str(mine), "--tenant", "bravo", *admin, code="NOT_FOUND")  # alpha's id, bravo's space
        a.stats(mine)
        # A tenant's own credential lists its own tenant, but is no admin.
        doc = ok_json(d, "sequences", "--tenant", "alpha", "--token-file", str(d.workdir / "alpha.token"))
        assert [s["id"] for s in doc["sequences"]] == [mine]
        for verb in (("reload",), ("evict", str(mine))):
            message, _ = refused(d, *verb, "--tenant", "alpha", "--token", TOKEN_A, code="PERMISSION_DENIED")
            assert "admin" in message and "--admin-token-file" in message
        a.stats(mine)  # not evicted
        with Client(d.endpoint, tenant="bravo", admin_token=ADMIN_TOKEN) as admin_client:
            assert admin_client.hello().admin is True and admin_client.hello().tenant == "bravo"
            assert {s.sequence_id for s in admin_client.list_sequences().sequences} == theirs - {victim}
        with Client(d.endpoint, tenant="alpha", token=TOKEN_A) as plain:
            with pytest.raises(KvdError) as e:
                plain.reload()
            assert e.value.code == ErrorCode.PERMISSION_DENIED
    # A wrong admin token, and an unknown tenant for a right one.
    message, _ = refused(d, "status", "--tenant", "alpha", "--admin-token", "x" * 20, code="PERMISSION_DENIED")
    assert "admin token not accepted" in message and "x" * 20 not in message
    message, _ = refused(d, "status", "--tenant", "nobody", *admin, code="NOT_FOUND")
    assert "alpha" in message
    # No credential at all: there is no open tenant.
    refused(d, "sequences", code="PERMISSION_DENIED")


def test_without_an_admin_token_nobody_is_admin_when_tenants_have_credentials(make_daemon):
    d = start_with_tenants(make_daemon, admin=False)
    assert ok_json(d, "status", "--tenant", "alpha", "--token", TOKEN_A)["admin"] is False
    message, _ = refused(d, "reload", "--tenant", "alpha", "--token", TOKEN_A, code="PERMISSION_DENIED")
    assert "admin.token_file" in message
    message, _ = refused(d, "status", "--tenant", "alpha", "--admin-token", ADMIN_TOKEN, code="PERMISSION_DENIED")
    assert "admin token not accepted" in message


def test_admin_section_is_checked(make_daemon):
    d = make_daemon(lambda cfg: cfg.__setitem__("admin", {"token": "short"}), start=False)
    d.start(wait=False)
    assert d.proc.wait(10) == 2
    assert "admin.token" in d.stderr() and "at least 16 characters" in d.stderr()


# ---------------------------------------------------------------------------------------------
# errors and exit codes

def test_unknown_sequence_and_usage_errors(kvd):
    message, doc = refused(kvd, "sequence", "424242", code="NOT_FOUND")
    assert "424242" in message and "424242" in doc["message"]
    for verb in ("release", "pin", "unpin", "evict", "compact"):
        refused(kvd, verb, "424242", code="NOT_FOUND")
    for args in (("compact", "1", "--method", "streamingllm", "--policy", "p"),
                 ("compact", "1", "--param", "novalue"), ("sequence", "not-a-number"),
                 ("status", "--timeout", "0"), ("no-such-verb",)):
        r = kvctl(kvd, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.strip(), args


def test_an_absent_daemon_is_reported_within_the_timeout(tmp_path):
    gone = f"ipc://{tmp_path}/no-kvd.sock"
    r = subprocess.run([str(KVCTL_BIN), "status", "--endpoint", gone], capture_output=True, text=True, timeout=10)
    assert r.returncode == 3 and f"cannot reach kvd at {gone}" in r.stderr
    # A socket file nobody listens on, and a tcp port nobody listens on: bounded by --timeout.
    import socket
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for endpoint in (f"ipc://{path}", f"tcp://127.0.0.1:{port}"):
        start = time.monotonic()
        r = subprocess.run([str(KVCTL_BIN), "sequences", "--endpoint", endpoint, "--timeout", "1", "--json"],
                           capture_output=True, text=True, timeout=10)
        assert time.monotonic() - start < 5
        assert r.returncode == 3, r.stderr
        doc = json.loads(r.stdout)["error"]
        assert doc["code"] == "UNREACHABLE" and f"cannot reach kvd at {endpoint}" in doc["message"]


def test_config_names_the_endpoint(kvd):
    r = subprocess.run([str(KVCTL_BIN), "status", "--config", str(kvd.config_path), "--json"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["endpoint"] == kvd.endpoint
    bad = kvd.workdir / "bad.yaml"
    bad.write_text("server: [\n")
    r = subprocess.run([str(KVCTL_BIN), "status", "--config", str(bad)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "bad.yaml" in r.stderr


# ---------------------------------------------------------------------------------------------
# CURVE

from test_endpoints_curve import curve_daemon, keys  # noqa: E402,F401  (fixtures)


def test_curve_tcp_endpoint(curve_daemon, keys):
    d = curve_daemon
    server_pub = (keys / "server.pub").read_text().strip()
    for server_key in (str(keys / "server.pub"), server_pub):  # a key file or the Z85 text
        r = kvctl(d, "status", "--curve-server-key", server_key, "--curve-key", str(keys / "client.key"),
                  json_out=True, endpoint=d.tcp)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["tenant"] == "alpha"  # the key's tenant
    # A key no tenant lists gets no reply: unreachable within the timeout, exit 3.
    start = time.monotonic()
    r = kvctl(d, "status", "--curve-server-key", server_pub, "--curve-key", str(keys / "other.key"),
              "--timeout", "1", endpoint=d.tcp)
    assert r.returncode == 3 and "cannot reach kvd" in r.stderr and time.monotonic() - start < 5
    r = kvctl(d, "status", "--curve-server-key", server_pub, endpoint=d.tcp)
    assert r.returncode == 2 and "--curve-key" in r.stderr


def test_values_starting_with_a_dash_are_values(kvd, tmp_path):
    # Z85 keys and tokens may start with '-': the word after the flag is its value, not a flag.
    r = kvctl(kvd, "status", "--curve-server-key", "-not-a-key", "--curve-key", str(tmp_path / "none.key"))
    assert "Missing value" not in r.stderr and "-not-a-key" in r.stdout + r.stderr, r.stdout + r.stderr
    r = kvctl(kvd, "status", "--token", "-dash-token")
    assert "Missing value" not in r.stderr, r.stderr
