import KVDCore
import Prometheus
import Synchronization

/// Compactions by method and by who asked (a Compact request, or the memory manager compressing or
/// shrinking before an offload): how many, how long, tokens before and after, bytes freed, and
/// failures. Recorded by `CompactionJob` on the worker that ran it.
final class CompactionMetrics: Sendable {
    static let durationBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
    ]

    private struct Method {
        let runs, tokensBefore, tokensAfter, bytesFreed, failures: Counter
        let duration: DurationHistogram
    }

    private let registry: PrometheusCollectorRegistry
    /// Series per (method, origin), made at the first compaction of each (methods are configured names).
    private let methods = Mutex<[String: Method]>([:])

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    private func series(_ method: String, _ origin: String) -> Method {
        methods.withLock { table in
            let key = method + "\u{0}" + origin
            if let m = table[key] { return m }
            let labels = [("method", method), ("origin", origin)]
            let r = registry
            let m = Method(
                runs: r.counter("kvd_compactions_total", labels: labels, help: "Compactions that changed a sequence, by method and origin (request or manager)."),
                tokensBefore: r.counter(
                    "kvd_compaction_tokens_before_total", labels: labels, help: "Tokens held (summed over heads) before each compaction."),
                tokensAfter: r.counter(
                    "kvd_compaction_tokens_after_total", labels: labels, help: "Tokens kept (summed over heads) after each compaction."),
                bytesFreed: r.counter(
                    "kvd_compaction_freed_bytes_total", labels: labels,
                    help: "Bytes of pages compactions gave back to the segment (net of pages copied on write)."),
                failures: r.counter(
                    "kvd_compaction_failures_total", labels: labels,
                    help: "Compactions refused or failed (bad parameters, a method's error, a plan the host rejected); the sequence is unchanged."),
                duration: r.durationHistogram(
                    "kvd_compaction_duration_seconds", labels: labels, buckets: Self.durationBuckets,
                    help: "Time one compaction took: planning, checks, packing and freeing pages."))
            table[key] = m
            return m
        }
    }

    func succeeded(method: String, origin: String, outcome: KVSequence.CompactionOutcome, pageBytes: Int, elapsedNs: UInt64) {
        let m = series(method, origin)
        m.runs.increment()
        m.tokensBefore.increment(by: Int64(outcome.before.reduce(0, +)))
        m.tokensAfter.increment(by: Int64(outcome.kept.reduce(0, +)))
        m.bytesFreed.increment(by: Int64(max(0, outcome.pagesFreed - outcome.pagesAllocated) * pageBytes))
        m.duration.recordNanoseconds(Int64(clamping: elapsedNs))
    }

    func failed(method: String, origin: String) { series(method, origin).failures.increment() }
}
