"""Section 11: what metrics cost a request. Section 1's round trip (C client: Stats and a
metadata-only Query, through libkvdclient and as raw prebuilt bytes) against two daemons on the same
Config/bench.yaml, one with `metrics.enabled: true` and one without, alternating: each round
measures the daemon with metrics, then the one without (the next round the other way round), each
against the same Swift echo in its own run so machine noise shows in both. While it is measured,
the daemon with metrics is scraped once a second, as a Prometheus would. Ratio = p50 with metrics
÷ p50 without, per round; the table shows median (min–max) over the rounds. Goal ≤ 1.05×."""
import threading
import urllib.request

from . import cbench
from .processes import Daemon, Echo, free_tcp_port
from .summary import fmt, goal_mark, spread

ROWS = ("stats", "stats_raw", "query_metadata", "query_metadata_raw")


class Scraper:
    """GET /metrics every second until stopped, like a Prometheus with a 1 s scrape interval."""

    def __init__(self, address: str):
        self.url = f"http://{address}/metrics"
        self.stopped = threading.Event()
        self.scrapes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=5) as r:
                assert r.status == 200 and r.read().startswith(b"# ")
            self.scrapes += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(10)


def daemon(metrics: bool, port: int = 0) -> Daemon:
    d = Daemon("metrics-on" if metrics else "metrics-off")
    listen = f'"127.0.0.1:{port}"'
    d.config.write_text(d.config.read_text() + f"\nmetrics: {{enabled: {'true' if metrics else 'false'}, listen: {listen}}}\n")
    return d


def measure(n: int, rounds: int) -> list:
    """One row per (request, round): p50/p99 with and without metrics, over ipc."""
    port = free_tcp_port()
    rows = []
    with daemon(True, port) as on, daemon(False) as off, Echo() as echo, Scraper(f"127.0.0.1:{port}") as scraper:
        for r in range(rounds):
            order = [("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]
            got = {label: {row["name"]: row for row in cbench.rtt(d.endpoints.ipc, echo.endpoints.ipc, n)} for label, d in order}
            for name in ROWS:
                a, b = got["on"][name], got["off"][name]
                rows.append({"request": name, "round": r, "on_p50": a["p50"], "off_p50": b["p50"], "on_p99": a["p99"],
                             "off_p99": b["p99"], "ratio_p50": a["p50"] / b["p50"], "ratio_p99": a["p99"] / b["p99"],
                             "on_vs_echo": a["ratio_p50"], "off_vs_echo": b["ratio_p50"]})
        scrapes = scraper.scrapes
    for row in rows:
        row["scrapes"] = scrapes
    return rows


def table(runs: list) -> list:
    rows = [r for run in runs for r in run]
    lines = ["### 11. Metrics cost (C client, ipc; the same round trips against a daemon with metrics on — scraped "
             "every second — and one with metrics off, alternating; ratio = p50 on ÷ p50 off per round)", "",
             "| request | rounds | p50 on µs | p50 off µs | p50 ratio | p99 ratio | goal p50 ≤ 1.05× |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name in ROWS:
        rs = [r for r in rows if r["request"] == name]
        if not rs:
            continue
        ratio = spread([r["ratio_p50"] for r in rs])
        label = name.replace("_raw", " (raw DEALER, no client library)")
        lines.append(f"| {label} | {len(rs)} | {fmt(spread([r['on_p50'] for r in rs]), 1)} | "
                     f"{fmt(spread([r['off_p50'] for r in rs]), 1)} | {fmt(ratio, 3)}× | "
                     f"{fmt(spread([r['ratio_p99'] for r in rs]), 3)}× | {goal_mark(ratio['median'] <= 1.05)} |")
    return lines
