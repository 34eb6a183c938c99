import KVDCore
import Prometheus
import Testing

@testable import KVDServer

@Suite struct MetricsSeriesTests {
    func lines(_ r: PrometheusCollectorRegistry, _ prefix: String) -> [String] {
        r.emitToString().split(separator: "\n").map(String.init).filter { $0.hasPrefix(prefix) }.sorted()
    }

    @Test func aMirroredCounterAddsOnlyWhatItsSourceGained() {
        let r = PrometheusCollectorRegistry()
        var m = MirroredCounter(r.counter("kvd_x_total", help: "x"))
        m.follow(5)
        m.follow(5)
        m.follow(3)  // a source never goes back; if it did, the counter must not
        m.follow(12)
        #expect(lines(r, "kvd_x_total") == ["kvd_x_total 12"])
    }

    @Test func requestsAreCountedByKindAndCodeAndTimedFromReceiptToSend() {
        let r = PrometheusCollectorRegistry()
        let requests = RequestMetrics(registry: r)
        var trace = RequestTrace(receivedNs: 1_000_000)
        trace.kind = "append"
        requests.record(trace.finished(Result<Int, KVDError>.success(1)), sentNs: 1_040_000)  // 40 µs
        requests.record(trace.finished(Result<Int, KVDError>.success(1)), sentNs: 3_000_000)  // 2 ms
        requests.record(trace.finished(Result<Int, KVDError>.failure(.notFound("gone"))), sentNs: 1_010_000)
        #expect(lines(r, "kvd_requests_total") == [
            #"kvd_requests_total{kind="append",code="NOT_FOUND"} 1"#, #"kvd_requests_total{kind="append",code="OK"} 2"#,
        ])
        let buckets = lines(r, "kvd_request_duration_seconds_bucket")
        #expect(buckets.contains(#"kvd_request_duration_seconds_bucket{kind="append",le="0.000025"} 1"#))
        #expect(buckets.contains(#"kvd_request_duration_seconds_bucket{kind="append",le="0.00005"} 2"#))
        #expect(buckets.contains(#"kvd_request_duration_seconds_bucket{kind="append",le="0.0025"} 3"#))
        #expect(lines(r, "kvd_request_duration_seconds_count") == [#"kvd_request_duration_seconds_count{kind="append"} 3"#])
    }

    @Test func everyErrorCodeHasItsWireName() {
        let names = KVDError.Code.allCases.map(RequestTrace.codeLabel)
        #expect(Set(names).count == KVDError.Code.allCases.count)
        #expect(names.allSatisfy { $0 == $0.uppercased() && !$0.contains(" ") && $0 != "OK" })
    }

    @Test func compactionsCountTokensBytesAndFailuresByMethodAndOrigin() {
        let r = PrometheusCollectorRegistry()
        let c = CompactionMetrics(registry: r)
        let outcome = KVSequence.CompactionOutcome(before: [40, 40], kept: [12, 12], pagesFreed: 14, pagesAllocated: 2)
        c.succeeded(method: "knorm", origin: "manager", outcome: outcome, pageBytes: 128, elapsedNs: 300_000)
        c.failed(method: "knorm", origin: "manager")
        let labels = #"{method="knorm",origin="manager"}"#
        #expect(lines(r, "kvd_compaction_tokens_before_total") == ["kvd_compaction_tokens_before_total\(labels) 80"])
        #expect(lines(r, "kvd_compaction_tokens_after_total") == ["kvd_compaction_tokens_after_total\(labels) 24"])
        #expect(lines(r, "kvd_compaction_freed_bytes_total") == ["kvd_compaction_freed_bytes_total\(labels) 1536"])
        #expect(lines(r, "kvd_compactions_total") == ["kvd_compactions_total\(labels) 1"])
        #expect(lines(r, "kvd_compaction_failures_total") == ["kvd_compaction_failures_total\(labels) 1"])
    }
}
