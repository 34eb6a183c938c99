"""Config/grafana/kvd-dashboard.json is valid JSON on a Prometheus datasource variable, and every
PromQL expression in it names only metrics a live kvd exports (scraped after a load that touches
every family)."""
import json
import re

from conftest import MODEL_F16, REPO, make_kv
from kvd import KvdError
from metrics_helpers import metrics_address, metrics_on, parse_exposition, scrape

DASHBOARD = REPO / "Config" / "grafana" / "kvd-dashboard.json"
METRIC = re.compile(r"\bkvd_[a-z0-9_]+\b")


def expressions(dashboard: dict) -> list:
    """(panel title, expr) of every query in the dashboard, and of its template variables."""
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            out.append((f"${v['name']}", v["definition"]))
    return out


def test_dashboard_is_valid_and_on_a_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for needed in ("request rate by kind", "error rate by code", "latency p50", "latency p99", "arena pages", "sequences",
                   "compactions by method", "memory-manager actions"):
        assert needed in titles, needed


def test_every_expression_names_only_exported_metrics(make_daemon):
    d = make_daemon(metrics_on())
    with d.client() as c:
        seq = c.create_sequence(MODEL_F16)
        k, v = make_kv(MODEL_F16, 24, seed=5)
        c.append(seq, k, v)
        c.compact(seq, "streamingllm", sinks=4, recent=8)
        try:
            c.stats(seq + 1)
        except KvdError:
            pass
        _, samples = parse_exposition(scrape(metrics_address(d)))
    exported = {name for name, _ in samples}
    named = set()
    for title, expr in expressions(json.loads(DASHBOARD.read_text())):
        names = set(METRIC.findall(expr))
        assert names, f"{title}: {expr} names no kvd metric"
        missing = names - exported
        assert not missing, f"{title}: {sorted(missing)} are not exported by kvd"
        named |= names
    # The dashboard covers every family (histograms through their buckets).
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in named}
    assert {"kvd_requests_total", "kvd_request_duration_seconds", "kvd_arena_pages", "kvd_sequences",
            "kvd_compactions_total", "kvd_memory_actions_total"} <= shown <= families
