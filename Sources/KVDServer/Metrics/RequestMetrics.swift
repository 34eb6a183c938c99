import Prometheus
import Synchronization

/// Requests by kind and outcome, and their latency from receipt to the reply being sent. Recorded
/// by the socket thread after each send; a scrape reads the same series through the registry.
final class RequestMetrics: Sendable {
    /// From a 25 µs bookkeeping request to a long compaction.
    static let latencyBuckets: [Duration] = [
        .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .seconds(2.5), .seconds(5), .seconds(10),
    ]

    private struct Kind {
        let succeeded: Counter
        let latency: DurationHistogram
    }

    private let registry: PrometheusCollectorRegistry
    /// Series per kind, made at a kind's first request (the kinds are a fixed, small set).
    private let kinds = Mutex<[String: Kind]>([:])

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    /// Counts a request and times it; `sentNs` is when its reply left (uptime ns).
    func record(_ trace: RequestTrace, sentNs: UInt64) {
        let series = kinds.withLock { table in
            if let k = table[trace.kind] { return k }
            let k = Kind(
                succeeded: registry.counter(
                    "kvd_requests_total", labels: [("kind", trace.kind), ("code", "OK")],
                    help: "Requests answered, by request kind and reply code (OK or the error code)."),
                latency: registry.durationHistogram(
                    "kvd_request_duration_seconds", labels: [("kind", trace.kind)], buckets: Self.latencyBuckets,
                    help: "Time from receiving a request to sending its reply, by request kind."))
            table[trace.kind] = k
            return k
        }
        if trace.code == "OK" {
            series.succeeded.increment()
        } else {
            // Errors are the rare path: the registry finds (or makes) the series itself.
            registry.counter(
                "kvd_requests_total", labels: [("kind", trace.kind), ("code", trace.code)],
                help: "Requests answered, by request kind and reply code (OK or the error code)."
            ).increment()
        }
        series.latency.recordNanoseconds(Int64(sentNs &- min(sentNs, trace.receivedNs)))
    }
}
