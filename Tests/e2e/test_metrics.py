"""/metrics read directly: the text format is valid and every family typed, the figures follow the
requests, unknown paths are 404, metrics off means no port at all, a taken port is a clear start-up
error, and a stalled HTTP client never holds up requests or other scrapes."""
import socket
import subprocess
import time

from conftest import MODEL_F16, make_kv
from kvd import ErrorCode, KvdError
from metrics_helpers import (http_get, listening_tcp_sockets, metrics_address, metrics_on, parse_exposition, scrape,
                             value)

FAMILIES = {
    "kvd_build_info": "gauge", "kvd_start_time_seconds": "gauge", "kvd_connections": "gauge",
    "kvd_requests_total": "counter", "kvd_request_duration_seconds": "histogram",
    "kvd_arena_pages": "gauge", "kvd_arena_page_limit": "gauge", "kvd_arena_page_bytes": "gauge",
    "kvd_staging_bytes": "gauge", "kvd_sequences": "gauge", "kvd_pinned_sequences": "gauge", "kvd_pinned_pages": "gauge",
    "kvd_orphan_sequences": "gauge", "kvd_memory_actions_total": "counter", "kvd_memory_freed_pages_total": "counter",
    "kvd_memory_reclaim_passes_total": "counter", "kvd_memory_synchronous_reclaims_total": "counter",
    "kvd_memory_last_reclaim_seconds": "gauge", "kvd_memory_events_published_total": "counter",
    "kvd_compactions_total": "counter", "kvd_compaction_duration_seconds": "histogram",
    "kvd_compaction_tokens_before_total": "counter", "kvd_compaction_tokens_after_total": "counter",
    "kvd_compaction_freed_bytes_total": "counter", "kvd_compaction_failures_total": "counter",
}


def test_scrape_is_valid_text_format_and_follows_requests(make_daemon):
    d = make_daemon(metrics_on())
    address = metrics_address(d)
    with d.client() as c:
        seq = c.create_sequence(MODEL_F16)
        k, v = make_kv(MODEL_F16, 40, seed=3)
        for s in range(0, 40, 10):
            c.append(seq, k[:, :, s:s + 10], v[:, :, s:s + 10])
        reply = c.compact(seq, "streamingllm", sinks=4, recent=8)
        try:
            c.stats(seq + 1)
            raise AssertionError("Stats of an unknown sequence answered")
        except KvdError as e:
            assert e.code == ErrorCode.NOT_FOUND
        stats = c.stats()
        types, samples = parse_exposition(scrape(address))
    for family, kind in FAMILIES.items():
        assert types.get(family) == kind, f"{family}: {types.get(family)} (want {kind})"
    assert all(name.startswith("kvd_") for name in types)
    assert value(samples, "kvd_build_info") == 1
    assert value(samples, "kvd_requests_total", kind="append", code="OK") == 4
    assert value(samples, "kvd_requests_total", kind="create_sequence", code="OK") == 1
    assert value(samples, "kvd_requests_total", kind="stats", code="NOT_FOUND") == 1
    assert value(samples, "kvd_request_duration_seconds_count", kind="append") == 4
    assert value(samples, "kvd_request_duration_seconds_bucket", kind="append", le="+Inf") == 4
    assert value(samples, "kvd_request_duration_seconds_sum", kind="append") > 0
    # The Stats reply is sent after this scrape's figures were read: the arena has not moved since.
    assert value(samples, "kvd_arena_pages", tenant="default", state="used") == stats.total_pages - stats.free_pages
    assert value(samples, "kvd_arena_pages", tenant="default", state="free") == stats.free_pages
    assert value(samples, "kvd_sequences", tenant="default") == stats.sequences == 1
    assert value(samples, "kvd_compactions_total", method="streamingllm", origin="request") == 1
    heads = 2 * 2  # layers x kv_heads of the tiny model
    assert value(samples, "kvd_compaction_tokens_before_total", method="streamingllm") == 40 * heads
    assert value(samples, "kvd_compaction_tokens_after_total", method="streamingllm") == 12 * heads
    assert value(samples, "kvd_compaction_freed_bytes_total", method="streamingllm") == reply.bytes_freed > 0


def test_unknown_paths_are_404_and_other_methods_405(make_daemon):
    address = metrics_address(make_daemon(metrics_on()))
    for path in ("/", "/metric", "/metrics/extra", "/favicon.ico"):
        status, _, _ = http_get(f"http://{address}{path}")
        assert status == 404, path
    for method in ("POST", "PUT", "DELETE"):
        status, _, _ = http_get(f"http://{address}/metrics", method=method)
        assert status == 405, method
    status, _, body = http_get(f"http://{address}/metrics", method="HEAD")
    assert status == 200 and body == ""


def test_metrics_off_listens_on_no_port(make_daemon):
    off = make_daemon()  # the test config: metrics.enabled false
    on = make_daemon(metrics_on())
    assert listening_tcp_sockets(off.proc.pid) == []
    port = int(metrics_address(on).rsplit(":", 1)[1])
    assert [s.rsplit(":", 1)[1] for s in listening_tcp_sockets(on.proc.pid)] == [str(port)]
    assert "metrics: serving" not in off.stderr()


def test_a_taken_port_is_a_clear_start_error(make_daemon):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = make_daemon(metrics_on(f"127.0.0.1:{port}"), start=False)
        d.start(wait=False)
        try:
            rc = d.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"kvd kept running with metrics.listen on a taken port:\n{d.stderr()}")
    assert rc == 1, d.stderr()
    log = d.stderr()
    assert f"metrics.listen 127.0.0.1:{port}" in log and "Address already in use" in log, log
    assert "Fatal error" not in log and "Stack dump" not in log
    assert not d.shm_path.exists() and not d.ipc_path.exists()


def test_a_stalled_http_client_holds_up_neither_requests_nor_scrapes(make_daemon):
    d = make_daemon(metrics_on())
    address = metrics_address(d)
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as stalled, d.client() as c:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        t = time.monotonic()
        seq = c.create_sequence(MODEL_F16)
        k, v = make_kv(MODEL_F16, 8, seed=4)
        c.append(seq, k, v)
        assert c.stats(seq).sequence.length == 8
        _, samples = parse_exposition(scrape(address))
        assert value(samples, "kvd_requests_total", kind="append", code="OK") == 1
        assert time.monotonic() - t < 3.0


def test_a_listen_address_that_is_not_an_address_is_a_config_error(make_daemon):
    d = make_daemon(metrics_on("localhost:9464"), start=False)
    d.start(wait=False)
    assert d.proc.wait(20) == 2
    assert "metrics.listen: must be an IP address and a port" in d.stderr() and "'localhost:9464'" in d.stderr()
