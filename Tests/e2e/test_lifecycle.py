"""Process lifetime: signals clean up, stale segments are replaced, bad configs are refused."""

import os
import re
import signal
import subprocess

import pytest

from conftest import KVD_BIN, MODEL_F16, Daemon, assert_sequence, make_kv
from kvd import Client
from kvd.shm import parse_header


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_removes_segment_and_socket(make_daemon, sig):
    d = make_daemon()
    with d.client() as c:
        s = c.create_sequence(MODEL_F16)
        c.append(s, *make_kv(MODEL_F16, 5, seed=1))
    assert d.shm_path.exists() and d.ipc_path.exists()
    assert d.stop(sig) == 0, d.stderr()
    assert not d.shm_path.exists(), f"{d.shm_path} left behind"
    assert not d.ipc_path.exists(), f"{d.ipc_path} left behind"


def test_stale_segment_is_replaced(make_daemon):
    d = make_daemon(start=False)
    fd = os.open(d.shm_path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"STALE!!!" + b"\xab" * 8184)  # 8 KiB of garbage, wrong size and magic
    finally:
        os.close(fd)
    d.start()
    with d.client() as c:
        info = c.hello().shm
        hdr = parse_header(c.arena.buffer)
        assert hdr.magic == b"KVDARENA" and hdr.size_bytes == info.size_bytes == 1 << 20
        assert os.stat(d.shm_path).st_size == 1 << 20
        st = c.stats()
        assert st.free_pages == st.total_pages
        s = c.create_sequence(MODEL_F16)
        k, v = make_kv(MODEL_F16, 9, seed=2)
        c.append(s, k, v, zero_copy=True)
        assert_sequence(c, s, k, v)
    assert d.stop() == 0
    assert not d.shm_path.exists()


def test_restart_gives_new_arena_generation(make_daemon):
    d1 = make_daemon()
    with d1.client() as c:
        g1 = c.hello().shm.arena_generation
    assert d1.stop() == 0
    d2 = Daemon(d1.workdir, d1.config)  # same name, same socket
    d2.start()
    try:
        with d2.client() as c:
            assert c.hello().shm.arena_generation != g1
    finally:
        assert d2.stop() == 0


def _run_bad_config(make_daemon, mutate):
    d = make_daemon(mutate=mutate, start=False)
    try:
        p = subprocess.run([str(KVD_BIN), "--config", str(d.config_path)], capture_output=True,
                           text=True, timeout=20, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kvd kept running on a bad config:\n{d.config_path.read_text()}")
    finally:
        leaked = d.shm_path.exists()
        if leaked:
            d.shm_path.unlink()  # a killed or misbehaving daemon must not leak the segment
    assert p.returncode != 0, f"kvd accepted a bad config:\n{d.config_path.read_text()}"
    assert not leaked, "a refused config must not leave a segment"
    return p.stderr


def _set(path, value):
    def mutate(cfg):
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


@pytest.mark.parametrize("mutate, key", [
    (_set(("server", "bogus_key"), 1), "bogus_key"),
    (_set(("arena", "shm_nmae"), "/x"), "shm_nmae"),
    (_set(("models", 0, "colour"), "red"), "colour"),
    (_set(("server", "max_sequences"), "lots"), "max_sequences"),
    (_set(("models", 1, "layers"), [1, 2]), "layers"),
    (_set(("models", 0, "dtype"), "f64"), "dtype"),
    (_set(("arena", "size_bytes"), "8KiB"), "size_bytes"),
], ids=["unknown-server-key", "unknown-arena-key", "unknown-model-key", "wrong-type-string",
        "wrong-type-list", "bad-dtype", "arena-too-small"])
def test_bad_config_names_key(make_daemon, mutate, key):
    def both(cfg):
        mutate(cfg)
        if key == "size_bytes":
            cfg["arena"]["staging_bytes"] = "4KiB"  # 8 KiB - 4 KiB header - 4 KiB: no 4 KiB page
    err = _run_bad_config(make_daemon, both)
    assert key in err, f"stderr does not name {key!r}:\n{err}"


@pytest.mark.parametrize("field", ["head_dim", "layers", "dtype", "page_tokens", "name"])
def test_missing_model_field(make_daemon, field):
    err = _run_bad_config(make_daemon, lambda cfg: cfg["models"][2].pop(field))
    assert field in err, f"stderr does not name {field!r}:\n{err}"


def test_missing_config_file(tmp_path, kvd_bin):
    p = subprocess.run([str(kvd_bin), "--config", str(tmp_path / "nope.yaml")],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0 and "nope.yaml" in p.stderr


def test_version_and_help(kvd_bin, kvd):
    p = subprocess.run([str(kvd_bin), "--version"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    m = re.search(r"\d+\.\d+\.\d+\S*", p.stdout)
    assert m, f"no version in {p.stdout!r}"
    with Client(kvd.endpoint) as c:
        assert c.hello().server_version == m.group(0)
    p = subprocess.run([str(kvd_bin), "--help"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and "--config" in p.stdout + p.stderr
