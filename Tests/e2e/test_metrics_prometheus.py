"""A real Prometheus scrapes kvd: after a known load, what Prometheus stored (read back through its
HTTP API) matches what the test did, exactly for counters, and the arena gauge matches Stats."""
import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import MODEL_F16, make_kv
from kvd import ErrorCode, KvdError
from metrics_helpers import free_port, http_get, metrics_address, metrics_on

SCRAPE_INTERVAL_S = 1


class Prometheus:
    """Debian's prometheus on a free loopback port, its own config and data dir, scraping one target."""

    def __init__(self, workdir: Path, target: str):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: this test needs Debian's prometheus package "
                        "(scripts/install-deps.sh installs it)")
        self.address = f"127.0.0.1:{free_port()}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_INTERVAL_S}s\n"
            f"  scrape_timeout: {SCRAPE_INTERVAL_S}s\n"
            "scrape_configs:\n"
            "  - job_name: kvd\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n")
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address={self.address}", "--log.level=warn"],
                cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if http_get(f"http://{self.address}/-/ready", timeout_s=1)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready within 30 s:\n{self.log.read_text()}")
            time.sleep(0.1)

    def query(self, promql: str) -> list:
        """The result vector of an instant query: [(labels, value)]."""
        status, _, body = http_get(f"http://{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", body
        return [(r["metric"], float(r["value"][1])) for r in reply["data"]["result"]]

    def one(self, promql: str) -> float:
        result = self.query(promql)
        assert len(result) == 1, f"{promql}: {result}"
        return result[0][1]

    def wait_for_scrape_after(self, t: float, timeout_s: float = 30) -> None:
        """Until Prometheus holds a successful scrape of kvd that started after wall time `t`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.query('timestamp(up{job="kvd"} == 1)')
            if got and got[0][1] > t:
                return
            time.sleep(0.2)
        pytest.fail(f"no scrape of kvd after the load within {timeout_s} s: "
                    f"{self.query('up')}\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def prometheus_for(tmp_path):
    started = []

    def start(target: str) -> Prometheus:
        p = Prometheus(tmp_path, target)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_prometheus_stores_what_the_load_did(make_daemon, prometheus_for):
    d = make_daemon(metrics_on())
    prom = prometheus_for(metrics_address(d))
    appends, queries = 6, 5
    with d.client() as c:
        seqs = [c.create_sequence(MODEL_F16) for _ in range(3)]
        k, v = make_kv(MODEL_F16, 24, seed=7)
        for i in range(appends):
            c.append(seqs[i % 3], k[:, :, :12], v[:, :, :12])
        for i in range(queries):
            c.query(seqs[i % 3])
        compacted = c.compact(seqs[0], "streamingllm", sinks=4, recent=8)
        with pytest.raises(KvdError) as bad:
            c.append(seqs[1], k[:, :, :1], v[:, :, :1, :4])  # values of the wrong head_dim
        assert bad.value.code == ErrorCode.INVALID_ARGUMENT
        stats = c.stats()
        done = time.time()
        prom.wait_for_scrape_after(done)

    def requests(kind, code="OK"):
        return prom.one(f'kvd_requests_total{{job="kvd",kind="{kind}",code="{code}"}}')

    assert requests("create_sequence") == 3
    assert requests("append") == appends
    assert requests("append", "INVALID_ARGUMENT") == 1
    assert requests("query") == queries
    assert requests("compact") == 1
    # The latency histogram counts every answered request of the kind, errors included.
    assert prom.one('kvd_request_duration_seconds_count{kind="append"}') == appends + 1
    assert prom.one('kvd_request_duration_seconds_bucket{kind="query",le="+Inf"}') == queries
    p99 = prom.one('histogram_quantile(0.99, sum by (le) (kvd_request_duration_seconds_bucket{kind="append"}))')
    assert 0 < p99 <= 10
    assert prom.one('kvd_arena_pages{tenant="default",state="used"}') == stats.total_pages - stats.free_pages
    assert prom.one('kvd_sequences{tenant="default"}') == 3
    assert prom.one('kvd_compactions_total{method="streamingllm",origin="request"}') == 1
    assert prom.one('kvd_compaction_freed_bytes_total{method="streamingllm"}') == compacted.bytes_freed
    versions = prom.query("kvd_build_info == 1")
    assert len(versions) == 1 and versions[0][0]["version"]
