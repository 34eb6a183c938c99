"""Structured logs (log.format): with `json`, every line kvd writes to stderr is one JSON object,
compactions and memory-manager actions are logged at info with their numbers, and a bad format is a
configuration error that names the key."""
from __future__ import annotations

import json
import time

import pytest

from kvd import ErrorCode, KvdError

from conftest import MODEL_F32, make_kv

START_EXIT_TIMEOUT_S = 10
from memory_helpers import filled, memory_config


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "kvd wrote nothing to stderr"
    objects = []
    for line in lines:
        obj = json.loads(line)  # every line, not just most: a collector drops what does not parse
        assert isinstance(obj, dict) and {"ts", "level", "msg", "pid"} <= obj.keys(), line
        objects.append(obj)
    return objects


def test_json_lines_carry_the_compaction_numbers(make_daemon):
    def cfg(c):
        c["log"] = {"level": "debug", "format": "json"}
    d = make_daemon(cfg)
    with d.client() as c:
        seq = c.create_sequence(MODEL_F32)
        k, v = make_kv(MODEL_F32, 48, seed=3)
        c.append(seq, k, v)
        r = c.compact(seq, "streamingllm", sinks=4, recent=12)
        with pytest.raises(KvdError) as missing:
            c.release(seq + 1)
    assert missing.value.code == ErrorCode.NOT_FOUND
    assert d.stop() == 0
    objects = json_lines(d.stderr())
    assert all(o["pid"] == objects[0]["pid"] for o in objects)
    assert {o["level"] for o in objects} <= {"error", "warning", "info", "debug"}
    [done] = [o for o in objects if o["msg"].startswith("compacted sequence")]
    assert done["level"] == "info"
    assert done["sequence"] == seq and done["method"] == "streamingllm"
    assert done["tokens_before"] == sum(h.before for h in r.heads) == 48 * len(r.heads)
    assert done["tokens_after"] == sum(h.kept for h in r.heads)
    assert done["tokens_after"] < done["tokens_before"]
    assert isinstance(done["ms"], float) and done["ms"] >= 0
    assert done["pages_freed"] == r.pages_freed
    # Debug level: one line per request, written when its reply went out.
    requests = [o for o in objects if o["level"] == "debug" and "request_id" in o]
    kinds = [o["kind"] for o in requests]
    assert kinds.count("create_sequence") == 1 and kinds.count("compact") == 1 and kinds.count("release") == 1
    [compact] = [o for o in requests if o["kind"] == "compact"]
    assert compact["code"] == "OK" and compact["ms"] >= done["ms"] * 0.5
    [release] = [o for o in requests if o["kind"] == "release"]
    assert release["code"] == "NOT_FOUND"
    mine = [o["request_id"] for o in requests if o["kind"] != "hello"]  # the start-up probe is another client
    assert len(set(mine)) == len(mine) == 4, "each request once (create, append, compact, release)"
    assert any(o["msg"].startswith("stopped") for o in objects)


def test_manager_actions_are_logged_at_info(make_daemon):
    def cfg(c):
        memory_config(c, c["server"]["endpoints"][0], high=0.02, low=0.01, busy_ms=50)
        c["log"] = {"level": "info", "format": "json"}
    d = make_daemon(cfg)
    with d.client() as c:
        seq, _, _ = filled(c, 256, seed=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and '"action":"compacted"' not in d.stderr():
            time.sleep(0.05)
    assert d.stop() == 0
    objects = json_lines(d.stderr())
    acts = [o for o in objects if o["msg"].startswith("memory manager:") and o.get("sequence") == seq]
    assert acts, d.stderr()
    assert acts[0]["action"] == "compacted" and acts[0]["level"] == "info"
    assert acts[0]["pages_freed"] > 0 and acts[0]["tenant"] and acts[0]["reason"]
    assert not any(o["level"] == "debug" for o in objects), "info level writes no debug lines"


def test_plain_is_the_default_and_unchanged(make_daemon):
    d = make_daemon()
    assert d.stop() == 0
    first = d.stderr().splitlines()[0]
    assert first.startswith("kvd info: kvd ") and " serving on " in first


def test_unknown_format_is_a_configuration_error(make_daemon):
    d = make_daemon(lambda c: c.update(log={"level": "info", "format": "xml"}), start=False)
    d.start(wait=False)
    rc = d.proc.wait(START_EXIT_TIMEOUT_S)
    d.returncode = rc
    assert rc == 2
    err = d.stderr()
    assert "configuration error" in err and "format" in err and "plain, json" in err and "xml" in err, err
