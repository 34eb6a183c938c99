"""A temporary kvd for the report (``--start-daemon``): an f32 model layout (SmolLM2's unless told
another, e.g. Gemma 3's with its per-layer windows), an arena big enough for a few sequences of the
longest prompt, and the report's composition policies. Stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from kvd import Client, ErrorCode, KvdError

MODEL = "smollm2-135m-f32"
LAYOUT = dict(layers=30, kv_heads=3, q_heads=9, head_dim=64, page_tokens=16)


def add_daemon_args(p, model: bool = False) -> None:
    """The arguments every report tool takes to reach a kvd: ``--endpoint`` or ``--start-daemon``
    (with ``--kvd-bin``), and with ``model`` the ``--model`` to serve (a kvd_transformers.models
    name)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--endpoint", help="a running kvd serving the model's f32 layout (ipc://...)")
    src.add_argument("--start-daemon", action="store_true",
                     help="start the newest .build kvd (release or debug) on a temporary config")
    p.add_argument("--kvd-bin", default=os.environ.get("KVD_BIN", ""), help="kvd binary to start")
    if model:
        p.add_argument("--model", default="smollm2-135m", help="smollm2-135m or gemma3-270m")


def find_kvd(repo: Path, explicit: str = "") -> Path:
    cands = [Path(explicit)] if explicit else [repo / ".build" / "release" / "kvd",
                                               repo / ".build" / "debug" / "kvd"]
    found = [c for c in cands if c.is_file()]
    if found:  # the newest build: a stale release binary may predate config keys the report uses
        return max(found, key=lambda c: c.stat().st_mtime)
    raise FileNotFoundError(f"kvd binary not found (tried {', '.join(map(str, cands))}); "
                            "run `swift build -c release` or pass --kvd-bin")


def _yaml(obj, indent: int = 0) -> str:
    """Block YAML of plain maps/lists/scalars (strings as JSON, which YAML reads)."""
    pad, out = " " * indent, []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out += [f"{pad}{k}:", _yaml(v, indent + 2)]
            else:
                out.append(f"{pad}{k}: {_scalar(v)}")
    else:
        for item in obj:
            if isinstance(item, dict):
                body = _yaml(item, indent + 2).splitlines()
                out += [f"{pad}- {body[0].lstrip()}"] + body[1:]
            else:
                out.append(f"{pad}- {_scalar(item)}")
    return "\n".join(out)


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{}"
    return json.dumps(str(v))


def arena_bytes(max_tokens: int, layout: dict = LAYOUT) -> int:
    page = 2 * layout["page_tokens"] * layout["head_dim"] * 4
    per_seq = layout["layers"] * layout["kv_heads"] * (max_tokens // layout["page_tokens"] + 8) * page
    return max(256 << 20, 4 * per_seq + (64 << 20))


def staging_bytes(max_tokens: int, layout: dict = LAYOUT) -> int:
    """Room for a whole-sequence inline Query of the longest prompt (keys and values, f32), which
    the KL metrics read: 64 MiB is short for Gemma 3 at 4096 tokens (18 × 256-dim heads)."""
    need = 2 * layout["layers"] * layout["kv_heads"] * max_tokens * layout["head_dim"] * 4
    return max(64 << 20, (need + (need >> 2) + (1 << 20) - 1) >> 20 << 20)


class TempDaemon:
    def __init__(self, binary: Path, max_tokens: int, policies: dict, file_dirs: list | None = None,
                 model: str = MODEL, layout: dict | None = None):
        """``layout``: ``layers, kv_heads, q_heads, head_dim`` and optionally ``layer_windows``
        (``page_tokens`` defaults to 16); SmolLM2's when None."""
        layout = {"page_tokens": 16, **(layout or LAYOUT)}
        self.workdir = Path(tempfile.mkdtemp(prefix="kvd-report-", dir="/tmp"))
        self.endpoint = f"ipc://{self.workdir}/kvd.sock"
        self.shm_name = f"/kvd-report-{uuid.uuid4().hex[:16]}"
        size = arena_bytes(max_tokens, layout)
        staging = staging_bytes(max_tokens, layout)
        cfg = {
            "server": {"endpoints": [self.endpoint], "max_message_bytes": "256MiB",
                       "max_tokens_per_append": 65536, "max_sequences": 256},
            "arena": {"shm_name": self.shm_name, "size_bytes": f"{size >> 20}MiB",
                      "staging_bytes": f"{staging >> 20}MiB"},
            "models": [{"name": model, **layout, "dtype": "f32",
                        "default_method": "streamingllm"}],
            "log": {"level": "warning"},
        }
        if policies:
            cfg["policies"] = policies
        if file_dirs:
            # Requests may name files only inside these directories (relative names).
            cfg["files"] = {"directories": [str(d) for d in file_dirs]}
        self.config_path = self.workdir / "kvd.yaml"
        self.config_path.write_text(_yaml(cfg) + "\n")
        self.log_path = self.workdir / "kvd.stderr"
        self.binary = binary
        self.proc = None

    def start(self, timeout_s: float = 30.0) -> "TempDaemon":
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen([str(self.binary), "--config", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + timeout_s
        with Client(self.endpoint, timeout_ms=300) as c:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kvd exited with {self.proc.returncode} at start:\n"
                                       f"{self.log_path.read_text(errors='replace')[-3000:]}")
                try:
                    c.hello()
                    return self
                except KvdError as e:
                    if e.code != ErrorCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shm = Path("/dev/shm") / self.shm_name.lstrip("/")
        if shm.exists():
            shm.unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def study_client(args, repo: Path, max_tokens: int, log, model: str = MODEL, layout: dict | None = None):
    """The client a study script talks through: to a temporary daemon sized for `max_tokens`
    (`--start-daemon`, binary from `--kvd-bin` or the repo's build; serving `model` with `layout`,
    SmolLM2's by default) or to `--endpoint`. The client is closed and the daemon stopped on the
    way out."""
    daemon = None
    if args.start_daemon:
        daemon = TempDaemon(find_kvd(repo, args.kvd_bin), max_tokens, {}, model=model, layout=layout).start()
        log(f"started {daemon.binary}")
    client = Client(daemon.endpoint if daemon else args.endpoint, timeout_ms=600000)
    try:
        yield client
    finally:
        client.close()
        if daemon is not None:
            daemon.stop()


def stage_logger(name: str):
    """log(msg) to stderr, prefixed with `name` and the seconds since this call."""
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{name} {time.monotonic() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)
    return log
