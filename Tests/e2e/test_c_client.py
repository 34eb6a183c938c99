"""The C client (Clients/c) against real daemons.

Builds libkvdclient, its test program and the examples with ``make -C Clients/c``; runs the C test
program (every call, inline vs zero-copy bit-exactness, every bad-input case) plainly and under
valgrind memcheck; checks data across languages (C appends -> Python reads, Python appends -> C
reads, bit-exact); drives a daemon restart and stop under a running C client; runs both examples;
installs to a temporary prefix and links against the installed ``kvdclient.pc``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from c_build import build_c_client
from conftest import (DTYPES, REPO, TINY, Daemon, assert_sequence, make_kv)

C_DIR = REPO / "Clients" / "c"
BUILD = C_DIR / "build"
TEST_BIN = BUILD / "test_kvd_client"
EXAMPLE_C = BUILD / "examples" / "compact_prompt"
EXAMPLE_CPP = BUILD / "examples" / "raii_example"
CROSS_MODELS = ["tiny-f16", "tiny-bf16", "tiny-f32"]
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)

POLICIES = {
    "stream_small": {"method": "streamingllm", "params": {"sinks": 1, "recent": 3}},
    "snap_small": {"method": "snapkv", "params": {"budget": 3}},
}


def _with_policies(cfg: dict) -> None:
    cfg["policies"] = {k: {"method": v["method"], "params": dict(v["params"])}
                       for k, v in POLICIES.items()}


@pytest.fixture(scope="module")
def c_build():
    """``make -C Clients/c`` (library, kvdclient.pc, test program, examples); -Werror."""
    return build_c_client(TEST_BIN, EXAMPLE_C, EXAMPLE_CPP, BUILD / "libkvdclient.a", BUILD / "libkvdclient.so",
                          BUILD / "kvdclient.pc")


@pytest.fixture
def c_daemon(make_daemon):
    return make_daemon(_with_policies)


def _summary(out: str):
    m = SUMMARY.findall(out)
    assert m, f"no 'N passed, M failed' line in:\n{out[-4000:]}"
    return int(m[-1][0]), int(m[-1][1])


def run_c(args, timeout=90, prefix=()):
    p = subprocess.run([*prefix, str(TEST_BIN), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    sys.stdout.write(p.stdout)  # shown by pytest on failure (and with -s)
    return p


def test_c_suite(c_build, c_daemon):
    p = run_c(["all", c_daemon.endpoint])
    passed, failed = _summary(p.stdout)
    assert p.returncode == 0 and failed == 0 and passed >= 19, \
        f"C tests failed (exit {p.returncode}):\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}"


def test_c_suite_under_valgrind(c_build, c_daemon, tmp_path):
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed (apt install valgrind)")
    log = tmp_path / "valgrind.log"
    p = run_c(["all", c_daemon.endpoint], timeout=240, prefix=(
        "valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
        "--errors-for-leak-kinds=definite,indirect,possible", "--track-origins=yes",
        "--error-exitcode=99", f"--log-file={log}"))
    text = log.read_text(errors="replace")
    summary = [line.split("== ", 1)[-1] for line in text.splitlines()
               if "ERROR SUMMARY" in line or "definitely lost" in line or "indirectly lost" in line
               or "possibly lost" in line or "All heap blocks were freed" in line
               or "in use at exit" in line]
    print("valgrind:", *summary, sep="\n  ")
    (BUILD / "valgrind-summary.txt").write_text("\n".join(summary) + "\n")
    _, failed = _summary(p.stdout)
    assert p.returncode == 0 and failed == 0, \
        f"valgrind run failed (exit {p.returncode}):\n{text[-8000:]}\n{p.stdout[-3000:]}"
    assert re.search(r"ERROR SUMMARY: 0 errors", text), text[-8000:]
    assert "definitely lost" not in text or re.search(r"definitely lost: 0 bytes", text), text[-8000:]


def test_cross_c_appends_python_reads(c_build, c_daemon, tmp_path):
    p = run_c(["write-cross", c_daemon.endpoint, tmp_path])
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [line.split() for line in (tmp_path / "manifest.txt").read_text().splitlines()]
    assert [r[0] for r in rows] == CROSS_MODELS
    with c_daemon.client() as c:
        for model, seq, tokens in rows:
            shape = (TINY["layers"], TINY["kv_heads"], int(tokens), TINY["head_dim"])
            k = np.fromfile(tmp_path / f"{model}.k", dtype=DTYPES[model]).reshape(shape)
            v = np.fromfile(tmp_path / f"{model}.v", dtype=DTYPES[model]).reshape(shape)
            assert_sequence(c, int(seq), k, v)
            st = c.stats(int(seq)).sequence
            assert (st.model, st.tenant, st.length) == (model, "from-c", int(tokens))


def test_cross_python_appends_c_reads(c_build, c_daemon, tmp_path):
    lines = []
    with c_daemon.client() as c:
        for i, model in enumerate(CROSS_MODELS):
            k, v = make_kv(model, 11, seed=70 + i)  # includes -0.0, +-inf, NaN
            seq = c.create_sequence(model, tenant="from-python")
            c.append(seq, k[:, :, :5], v[:, :, :5])
            c.append(seq, k[:, :, 5:], v[:, :, 5:], zero_copy=True)
            k.tofile(tmp_path / f"{model}.k")
            v.tofile(tmp_path / f"{model}.v")
            lines.append(f"{model} {seq} 11")
    (tmp_path / "manifest.txt").write_text("\n".join(lines) + "\n")
    p = run_c(["read-cross", c_daemon.endpoint, tmp_path])
    assert p.returncode == 0 and _summary(p.stdout) == (1, 0), p.stdout + p.stderr


def _expect_line(proc, want: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.strip() == want:
            return
    proc.kill()
    pytest.fail(f"C restart test did not print {want!r}:\n{''.join(seen)}\n{proc.stderr.read()}")


def test_daemon_restart_and_stop_mid_session(c_build, c_daemon):
    """Restart: the next call says KVD_ERR_RESTARTED and re-attaches; stopped: KVD_ERR_TIMEOUT
    naming the vanished segment, no hang; started again: KVD_ERR_RESTARTED, then normal."""
    proc = subprocess.Popen([str(TEST_BIN), "restart", c_daemon.endpoint], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    extra = []
    try:
        _expect_line(proc, "READY restart")
        assert c_daemon.stop() == 0
        d2 = Daemon(c_daemon.workdir, c_daemon.config)
        extra.append(d2)
        d2.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        _expect_line(proc, "READY stop")
        assert d2.stop() == 0
        assert not d2.shm_path.exists()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        _expect_line(proc, "READY start")
        d3 = Daemon(c_daemon.workdir, c_daemon.config)
        extra.append(d3)
        d3.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and _summary(out) == (1, 0), out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for d in extra:
            assert d.stop() == 0
            if d.shm_path.exists():
                d.shm_path.unlink()


def test_examples(c_build, c_daemon):
    p = subprocess.run([str(EXAMPLE_C), c_daemon.endpoint, "tiny-f16", "snap_small"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    # 40 tokens, snapkv budget 3 + an 8-token observation window -> 11 kept per head, 2 heads
    for layer in range(TINY["layers"]):
        assert re.search(rf"^layer {layer}: kept 22 of 80 tokens", p.stdout, re.M), p.stdout
    assert "policy snap_small" in p.stdout, p.stdout
    p = subprocess.run([str(EXAMPLE_CPP), c_daemon.endpoint, "tiny-f32"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "round trip ok" in p.stdout and "error caught:" in p.stdout, p.stdout
    # and a clear error, not a hang, when the daemon is gone
    assert c_daemon.stop() == 0
    t0 = time.monotonic()
    p = subprocess.run([str(EXAMPLE_C), c_daemon.endpoint, "tiny-f16", "snap_small", "500"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "KVD_ERR_TIMEOUT" in p.stderr, p.stdout + p.stderr
    assert time.monotonic() - t0 < 10


def test_install_and_pkg_config(c_build, tmp_path):
    prefix = tmp_path / "prefix"
    p = subprocess.run(["make", "-C", str(C_DIR), "install", f"PREFIX={prefix}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    pc_dir = prefix / "lib" / "pkgconfig"
    env = dict(os.environ, PKG_CONFIG_PATH=str(pc_dir))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "kvdclient"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert f"-I{prefix}/include" in flags and "-lkvdclient" in flags, flags
    static = subprocess.run(["pkg-config", "--static", "--libs", "kvdclient"], env=env,
                            capture_output=True, text=True, check=True).stdout.split()
    assert "-lzmq" in static and "-lprotobuf-c" in static, static
    # Shared, through the installed .pc (rpath for running in place) ...
    out = tmp_path / "ex_shared"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", str(C_DIR / "examples" /
                    "compact_prompt.c"), "-o", str(out), *flags, f"-Wl,-rpath,{prefix}/lib", "-lm"],
                   check=True, timeout=60)
    # ... and static: libkvdclient.a plus its dependencies (shared: Debian's libzmq.pc lists
    # static-only flags, e.g. openpgm's libprotokit.a, that its -dev package does not ship).
    out_static = tmp_path / "ex_static"
    libs = subprocess.run(["pkg-config", "--libs", "libzmq", "libprotobuf-c"], capture_output=True,
                          text=True, check=True).stdout.split() + ["-lpthread"]
    subprocess.run(["gcc", "-std=c11", str(C_DIR / "examples" / "compact_prompt.c"), "-o",
                    str(out_static), f"-I{prefix}/include", str(prefix / "lib" / "libkvdclient.a"),
                    *libs, "-lm"], check=True, timeout=60)
    p = subprocess.run([str(out_static)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "usage" in p.stderr  # runs; no daemon needed to print usage
