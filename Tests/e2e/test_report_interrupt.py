"""A report run stops between rows on SIGTERM even when the KeyboardInterrupt the signal raises is
swallowed (Python drops exceptions raised inside finalizers): no row finished after the stop lands in
the checkpoint, and the process ends with the interrupted status the report returns (130)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO

SCRIPT = textwrap.dedent("""
    import gc, json, os, signal, sys
    from kvd_transformers.report import interrupt
    from kvd_transformers.report.checkpoint import Checkpoint

    interrupt.install()
    ckpt = Checkpoint(sys.argv[1], resume=False)
    ckpt.add({"key": "first"})

    class SignalInFinalizer:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler's exception is dropped here

    SignalInFinalizer()
    gc.collect()
    print("still running", flush=True)
    try:
        ckpt.add({"key": "second"})
    except KeyboardInterrupt as e:
        print(f"stopped: {e}", flush=True)
        sys.exit(130)
    sys.exit(0)
""")


def test_sigterm_swallowed_in_a_finalizer_still_stops_before_the_next_row(tmp_path):
    path = tmp_path / "checkpoint.jsonl"
    env = {"PYTHONPATH": str(REPO / "Clients" / "python"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 130, (r.returncode, r.stdout, r.stderr)
    assert "still running" in r.stdout and "stopped: signal 15" in r.stdout, r.stdout
    assert [json.loads(l)["key"] for l in path.read_text().splitlines()] == ["first"]


def test_without_a_signal_rows_land(tmp_path):
    path = tmp_path / "checkpoint.jsonl"
    code = ("import sys\nfrom kvd_transformers.report.checkpoint import Checkpoint\n"
            "c = Checkpoint(sys.argv[1], resume=False)\nc.add({'key': 'a'})\nc.add({'key': 'b'})\n")
    env = {"PYTHONPATH": str(REPO / "Clients" / "python"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert [json.loads(l)["key"] for l in path.read_text().splitlines()] == ["a", "b"]
