"""Fixtures for kvd end-to-end tests: temp configs, a real daemon per test, clients, test data.

The daemon binary is ``$KVD_BIN`` or ``<repo>/.build/debug/kvd``. Each daemon gets its own shm name
(``/kvd-test-<uuid>``) and ipc socket, so tests never share state and can run next to a real kvd.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import zmq

REPO = Path(__file__).resolve().parents[2]
# Let the suite run from a checkout without `pip install -e Clients/python`.
sys.path.insert(0, str(REPO / "Clients" / "python"))

from kvd import Client, ErrorCode, KvdError  # noqa: E402
from kvd.v1 import envelope_pb2  # noqa: E402

KVD_BIN = Path(os.environ.get("KVD_BIN", REPO / ".build" / "debug" / "kvd"))
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

# Small models: 2 layers x 2 KV heads x head_dim 8, 4 tokens per page, one per dtype. "wide-f32"
# only makes pages big (2 * 8 * 64 * 4 = 4096 bytes), so a 1 MiB arena has ~190 pages and
# "arena full" is a few appends away.
TINY = dict(layers=2, kv_heads=2, q_heads=4, head_dim=8, page_tokens=4)
MODEL_F16, MODEL_BF16, MODEL_F32, MODEL_WIDE = "tiny-f16", "tiny-bf16", "tiny-f32", "wide-f32"
DTYPES = {MODEL_F16: np.dtype(np.float16), MODEL_BF16: np.dtype(ml_dtypes.bfloat16),
          MODEL_F32: np.dtype(np.float32), MODEL_WIDE: np.dtype(np.float32)}
TINY_MODELS = [MODEL_F16, MODEL_BF16, MODEL_F32]
PAGE_BYTES = 4096
MAX_TOKENS_PER_APPEND = 64
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SEQUENCES = 16


def model_entry(name: str, dtype: str, **layout) -> dict:
    return {"name": name, **layout, "dtype": dtype, "default_method": "streamingllm"}


def default_config(shm_name: str, endpoint: str) -> dict:
    """The test config: every key of Config/kvd.yaml, small limits, four models."""
    return {
        "server": {
            "endpoints": [endpoint],
            "max_message_bytes": "64KiB",
            "max_tokens_per_append": MAX_TOKENS_PER_APPEND,
            "max_sequences": MAX_SEQUENCES,
        },
        "arena": {"shm_name": shm_name, "size_bytes": "1MiB", "staging_bytes": "256KiB"},
        "models": [
            model_entry(MODEL_F16, "f16", **TINY),
            model_entry(MODEL_BF16, "bf16", **TINY),
            model_entry(MODEL_F32, "f32", **TINY),
            model_entry(MODEL_WIDE, "f32", layers=1, kv_heads=1, q_heads=1, head_dim=64,
                        page_tokens=8),
        ],
        # The error-path tests fill the arena and expect it to stay full, so the memory manager
        # may not compress or evict here; its own tests (test_memory_*.py) turn both on.
        "memory": {"compress_policy": "", "evict": False},
        "log": {"level": "info"},
        # Many daemons run at once: none listens for scrapes unless its test asks (test_metrics_*.py
        # turns it on with port 0, and reads the bound port from the log).
        "metrics": {"enabled": False, "listen": "127.0.0.1:0"},
    }


# ---------------------------------------------------------------------------------------------
# YAML: the configs are plain maps/lists/scalars, so a tiny emitter avoids a PyYAML dependency.

def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent: int = 0) -> str:
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, (dict, list)):
                lines.append(f"{pad}{k}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2).splitlines()
                lines.append(f"{pad}- {body[0].lstrip()}")
                lines.extend(body[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(obj))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The daemon

class Daemon:
    """One kvd process on a temp config; stderr goes to a file (a pipe could fill and block it)."""

    def __init__(self, workdir: Path, config: dict):
        self.workdir = workdir
        self.config = config
        self.config_path = workdir / "kvd.yaml"
        self.config_path.write_text(to_yaml(config) + "\n")
        self.log_path = workdir / "kvd.stderr"
        self.endpoint = config["server"]["endpoints"][0]
        self.shm_name = config["arena"]["shm_name"]
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    @property
    def shm_path(self) -> Path:
        return Path("/dev/shm") / self.shm_name.lstrip("/")

    @property
    def ipc_path(self) -> Path | None:
        return Path(self.endpoint[len("ipc://"):]) if self.endpoint.startswith("ipc://") else None

    def stderr(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, wait: bool = True, args=()) -> "Daemon":
        """Start (or start again after `stop`); `args` are extra command-line arguments."""
        self.returncode = None
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen([str(KVD_BIN), "--config", str(self.config_path), *args],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll Hello until it succeeds (up to START_TIMEOUT_S); fail with the log otherwise."""
        deadline = time.monotonic() + START_TIMEOUT_S
        with Client(self.endpoint, timeout_ms=200) as c:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"kvd exited with {self.proc.returncode} during start:\n"
                                f"{self.stderr()}")
                try:
                    c.hello()
                    return
                except KvdError as e:
                    if e.code != ErrorCode.UNAVAILABLE or time.monotonic() > deadline:
                        pytest.fail(f"kvd did not answer Hello within {START_TIMEOUT_S} s "
                                    f"({e}):\n{self.stderr()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon and wait for it; returns its exit code (-9 if it had to be killed)."""
        if self.proc is None:
            return 0
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.returncode = -9
        return self.returncode

    def client(self, timeout_ms: int = 5000) -> Client:
        c = Client(self.endpoint, timeout_ms=timeout_ms)
        c.hello()
        return c


@contextmanager
def serving(workdir: Path, cfg: dict):
    """kvd on ``cfg`` in ``workdir`` for a module fixture: started, yielded, then stopped with
    SIGTERM, its segment and workdir removed; fails the test if kvd did not exit 0."""
    d = Daemon(workdir, cfg)
    d.start()
    try:
        yield d
    finally:
        rc = d.stop()
        if d.shm_path.exists():
            d.shm_path.unlink()
        shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 0, f"kvd exited with {rc} on SIGTERM:\n{d.stderr()[-4000:]}"


def _short_workdir(tmp_path: Path) -> Path:
    # An ipc:// path must fit sockaddr_un.sun_path (108 bytes); pytest's tmp_path for a long test
    # name may not, so fall back to a short directory under /tmp.
    if len(str(tmp_path)) < 80:
        return tmp_path
    return Path(tempfile.mkdtemp(prefix="kvd-e2e-", dir="/tmp"))


@pytest.fixture(scope="session")
def kvd_bin() -> Path:
    if not KVD_BIN.is_file():
        pytest.fail(f"kvd binary not found at {KVD_BIN}; run `swift build` or set KVD_BIN")
    return KVD_BIN


@pytest.fixture
def make_daemon(kvd_bin, tmp_path):
    """Factory: ``make_daemon(mutate=None, start=True)`` -> Daemon.

    ``mutate(config)`` may edit the default config dict in place before it is written. Every daemon
    still running at teardown gets SIGTERM and must exit 0 and leave no shm segment behind.
    """
    made = []
    owned_dirs = []

    def factory(mutate=None, start: bool = True) -> Daemon:
        base = _short_workdir(tmp_path)
        if base != tmp_path:
            owned_dirs.append(base)
        workdir = base / f"d{len(made)}"
        workdir.mkdir()
        cfg = default_config(f"/kvd-test-{uuid.uuid4().hex}", f"ipc://{workdir}/kvd.sock")
        if mutate is not None:
            mutate(cfg)
        d = Daemon(workdir, cfg)
        made.append(d)
        if start:
            d.start()
        return d

    yield factory

    problems = []
    for d in made:
        if d.proc is None:
            continue
        was_running = d.returncode is None and d.proc.poll() is None
        rc = d.stop()
        if was_running and rc != 0:
            problems.append(f"kvd exited with {rc} on SIGTERM:\n{d.stderr()[-4000:]}")
        if d.shm_path.exists():
            d.shm_path.unlink()  # do not leak segments across tests, whatever happened
            if was_running:
                problems.append(f"{d.shm_path} still exists after SIGTERM")
        if was_running and d.ipc_path is not None and d.ipc_path.exists():
            problems.append(f"{d.ipc_path} still exists after SIGTERM")
    for p in owned_dirs:
        shutil.rmtree(p, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def kvd(make_daemon) -> Daemon:
    """A running daemon on the default test config."""
    return make_daemon()


@pytest.fixture
def client(kvd):
    """A Client on ``kvd`` that has said Hello (arena mapped)."""
    c = kvd.client()
    yield c
    c.close()


# ---------------------------------------------------------------------------------------------
# Data

def make_kv(model: str, tokens: int, seed: int, layers: int = None, kv_heads: int = None,
            head_dim: int = None):
    """Random K, V ``[layers, kv_heads, tokens, head_dim]`` in the model's dtype, with a few
    special values (-0.0, +-inf, NaN) so byte-exactness is really checked."""
    rng = np.random.default_rng(seed)
    shape = (layers or TINY["layers"], kv_heads or TINY["kv_heads"], tokens,
             head_dim or TINY["head_dim"])
    if model == MODEL_WIDE and layers is None:
        shape = (1, 1, tokens, 64)
    dt = DTYPES[model]
    out = []
    for _ in range(2):
        a = rng.standard_normal(shape).astype(np.float32) * 8
        flat = a.reshape(-1)
        if flat.size >= 8:
            idx = rng.choice(flat.size, 4, replace=False)
            flat[idx] = [-0.0, np.inf, -np.inf, np.nan]
        out.append(a.astype(dt))
    return out[0], out[1]


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    g, w = bits(got), bits(want)
    if not np.array_equal(g, w):
        bad = np.argwhere(g != w)
        raise AssertionError(f"{what}: {len(bad)} elements differ, first at {tuple(bad[0])}: "
                             f"{g[tuple(bad[0])]:#x} != {w[tuple(bad[0])]:#x}")


def assert_sequence(c: Client, seq: int, keys: np.ndarray, values: np.ndarray,
                    positions=None, modes=("pages", "inline", "gather")) -> None:
    """``seq`` holds exactly ``keys``/``values`` [L, H, T, D] (bit-exact) in every mode, with
    ``positions`` (default 0..T-1) and log-weights 0."""
    L, H, T, _ = keys.shape
    want_pos = np.arange(T, dtype=np.int32) if positions is None else np.asarray(positions, np.int32)
    for mode in modes:
        q = c.query(seq, mode=mode)
        assert len(q) == L * H, f"{mode}: {len(q)} heads, expected {L * H}"
        assert [(h.layer, h.head) for h in q] == [(l, h) for l in range(L) for h in range(H)], mode
        for h in q:
            assert h.num_tokens == T, f"{mode} ({h.layer},{h.head}): {h.num_tokens} tokens != {T}"
            assert_bits_equal(h.keys, keys[h.layer, h.head], f"{mode} K({h.layer},{h.head})")
            assert_bits_equal(h.values, values[h.layer, h.head], f"{mode} V({h.layer},{h.head})")
            assert h.positions.tolist() == want_pos.tolist(), f"{mode} positions"
            assert bits(h.log_weights).tolist() == [0] * T, f"{mode} log-weights not +0.0"


def free_pages(c: Client) -> int:
    return c.stats().free_pages


def raw_roundtrip(endpoint: str, frames, sock_type=zmq.DEALER, timeout_ms: int = 5000):
    """Send raw ``frames`` (list of bytes) on a fresh socket; returns the reply frames."""
    ctx = zmq.Context.instance()
    s = ctx.socket(sock_type)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(endpoint)
        s.send_multipart(frames)
        assert s.poll(timeout_ms, zmq.POLLIN), f"no reply to raw frames {frames!r:.80}"
        return s.recv_multipart()
    finally:
        s.close(linger=0)


def parse_response(payload: bytes) -> envelope_pb2.Response:
    r = envelope_pb2.Response()
    r.ParseFromString(payload)
    return r


class Witness:
    """A second sequence with known data; ``check()`` asserts it is untouched and kvd answers."""

    def __init__(self, c: Client):
        self.c = c
        self.seq = c.create_sequence(MODEL_F16, tenant="witness")
        self.k, self.v = make_kv(MODEL_F16, 6, seed=1234)
        c.append(self.seq, self.k[:, :, :5], self.v[:, :, :5])
        c.append(self.seq, self.k[:, :, 5:], self.v[:, :, 5:], zero_copy=True)

    def check(self) -> None:
        self.c.hello()
        st = self.c.stats(self.seq).sequence
        assert (st.length, st.generation, st.reserved_tokens) == (6, 1, 0)
        assert_sequence(self.c, self.seq, self.k, self.v, modes=("pages", "inline"))


@pytest.fixture
def witness(client) -> Witness:
    return Witness(client)


# ---------------------------------------------------------------------------------------------
# Compaction-method tests: a GQA model (G = 2) per dtype, a roomier arena, one daemon per module.

GQA = dict(layers=3, kv_heads=2, q_heads=4, head_dim=16, page_tokens=4)
MODEL_GQA_F32, MODEL_GQA_F16 = "gqa-f32", "gqa-f16"
GQA_MODELS = {MODEL_GQA_F32: np.dtype(np.float32), MODEL_GQA_F16: np.dtype(np.float16)}


def add_gqa_models(cfg: dict) -> None:
    """``make_daemon`` mutator: add the two GQA models and room for several 50-token sequences."""
    cfg["models"].append(model_entry(MODEL_GQA_F32, "f32", **GQA))
    cfg["models"].append(model_entry(MODEL_GQA_F16, "f16", **GQA))
    cfg["arena"]["size_bytes"] = "16MiB"
    cfg["arena"]["staging_bytes"] = "1MiB"
    cfg["server"]["max_message_bytes"] = "1MiB"


def fill_sequence(c: Client, model: str, keys: np.ndarray, values: np.ndarray,
                  chunk: int = 16) -> int:
    """A new sequence of ``model`` holding ``keys``/``values`` [L, H, T, D], appended in chunks."""
    seq = c.create_sequence(model)
    for s in range(0, keys.shape[2], chunk):
        c.append(seq, keys[:, :, s:s + chunk], values[:, :, s:s + chunk])
    return seq


@pytest.fixture(scope="module")
def gqa_daemon(kvd_bin, tmp_path_factory):
    """One daemon for a whole module, on the default test config plus the GQA models."""
    workdir = Path(tempfile.mkdtemp(prefix="kvd-gqa-", dir="/tmp"))
    cfg = default_config(f"/kvd-test-{uuid.uuid4().hex}", f"ipc://{workdir}/kvd.sock")
    add_gqa_models(cfg)
    with serving(workdir, cfg) as d:
        yield d


@pytest.fixture(scope="module")
def gqa_client(gqa_daemon):
    c = gqa_daemon.client()
    yield c
    c.close()


# ---------------------------------------------------------------------------------------------
# DBudgetKV / BalanceKV / KVSharer tests: a 4-layer GQA model per dtype (G = 2, 8 tokens per page)
# and one daemon per module with the module's policies.

SEEDM = dict(layers=4, kv_heads=2, q_heads=4, head_dim=16, page_tokens=8)
MODEL_SEED_F32, MODEL_SEED_F16 = "seed-f32", "seed-f16"
SEED_MODELS = {MODEL_SEED_F32: np.dtype(np.float32), MODEL_SEED_F16: np.dtype(np.float16)}


def add_seed_models(cfg: dict, policies: dict | None = None) -> None:
    """``make_daemon`` mutator: the two 4-layer GQA models, a roomy arena, optional policies."""
    cfg["models"].append(model_entry(MODEL_SEED_F32, "f32", **SEEDM))
    cfg["models"].append(model_entry(MODEL_SEED_F16, "f16", **SEEDM))
    cfg["arena"]["size_bytes"] = "32MiB"
    cfg["arena"]["staging_bytes"] = "2MiB"
    cfg["server"]["max_message_bytes"] = "4MiB"
    cfg["server"]["max_tokens_per_append"] = 512
    cfg["server"]["max_sequences"] = 256
    if policies:
        cfg["policies"] = json.loads(json.dumps(policies))


def start_module_daemon(policies: dict | None = None) -> Daemon:
    """A daemon on the default test config plus the seed models (stop it with
    ``stop_module_daemon``)."""
    workdir = Path(tempfile.mkdtemp(prefix="kvd-seed-", dir="/tmp"))
    cfg = default_config(f"/kvd-test-{uuid.uuid4().hex}", f"ipc://{workdir}/kvd.sock")
    add_seed_models(cfg, policies)
    d = Daemon(workdir, cfg)
    d.start()
    return d


def stop_module_daemon(d: Daemon) -> None:
    rc = d.stop()
    if d.shm_path.exists():
        d.shm_path.unlink()
    shutil.rmtree(d.workdir, ignore_errors=True)
    assert rc == 0, f"kvd exited with {rc} on SIGTERM:\n{d.stderr()[-4000:]}"


def sequence_snapshot(c: Client, seq: int):
    """Everything a query and the sequence stats show, as bytes (bit-exact before/after checks)."""
    q = c.query(seq, mode="inline", copy=True)
    st = c.stats(seq).sequence
    return (q.generation, q.length, st.pages, st.tokens_held, st.aliased_layers,
            [(h.layer, h.head, h.positions.tobytes(), h.log_weights.tobytes(), h.keys.tobytes(),
              h.values.tobytes()) for h in q])


# ---------------------------------------------------------------------------------------------
# The real model (SmolLM2-135M-Instruct) as a kvd layout, shared by the real-model test modules.

SMOLLM2_F32 = "smollm2-135m-f32"
SMOLLM2_LAYOUT = dict(layers=30, kv_heads=3, q_heads=9, head_dim=64, page_tokens=16)


def smollm2_daemon(prefix: str, *, arena: str, staging: str, max_message: str, max_tokens: int,
                   policies: dict | None = None):
    """Generator for a module fixture: a daemon with the f32 SmolLM2 layout (f32 so generation
    through kvd can match plain transformers bit for bit); stops it and checks exit 0 after."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    cfg = default_config(f"/kvd-test-{uuid.uuid4().hex}", f"ipc://{workdir}/kvd.sock")
    cfg["models"].append(model_entry(SMOLLM2_F32, "f32", **SMOLLM2_LAYOUT))
    cfg["arena"]["size_bytes"] = arena
    cfg["arena"]["staging_bytes"] = staging
    cfg["server"]["max_message_bytes"] = max_message
    cfg["server"]["max_tokens_per_append"] = max_tokens
    if policies:
        cfg["policies"] = policies
    d = Daemon(workdir, cfg)
    d.start()
    yield d
    rc = d.stop()
    if d.shm_path.exists():
        d.shm_path.unlink()
    shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 0, f"kvd exited with {rc} on SIGTERM:\n{d.stderr()[-4000:]}"
