import Dispatch
import Foundation
import KVDConfig
import Prometheus
import Synchronization

/// Everything kvd exports on /metrics (docs/METRICS.md): one registry per server, the request and
/// compaction series their owners record into, and per-tenant figures read at scrape time.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let requests: RequestMetrics
    let compactions: CompactionMetrics
    private let tenants = Mutex<[TenantGauges]>([])
    private let connections: Gauge
    /// Scrapes run one at a time (each one updates the scrape-time series, then renders them all).
    private let scraping = Mutex(())

    init() {
        requests = RequestMetrics(registry: registry)
        compactions = CompactionMetrics(registry: registry)
        registry.gauge(
            "kvd_build_info", labels: [("version", KVDVersion.string)], help: "Always 1; the version label says which kvd runs."
        ).set(1.0)
        connections = registry.gauge(
            "kvd_connections", help: "Connections whose lease is tracked (heard from within their lease and grace).")
        registry.gauge("kvd_start_time_seconds", help: "When this kvd started, in seconds since the Unix epoch.")
            .set(Date().timeIntervalSince1970)
    }

    /// The store whose tenants a scrape reads; set while the server runs (the store also holds
    /// these metrics, so `unwatch` breaks that cycle at shutdown).
    private let watched = Mutex<Store?>(nil)

    /// Adds the per-tenant series of `store`'s segments (once, when the server starts).
    func watch(_ store: Store) {
        let made = store.spaces.map { TenantGauges(space: $0, registry: registry) }
        tenants.withLock { $0 = made }
        watched.withLock { $0 = store }
    }

    /// Scrapes stop reading the store (before its segments are unmapped).
    func unwatch() {
        watched.withLock { $0 = nil }
        tenants.withLock { $0 = [] }
    }

    /// Counts and times one answered request; the socket thread calls it right after sending.
    func replied(_ trace: RequestTrace, sentNs: UInt64) {
        requests.record(trace, sentNs: sentNs)
    }

    /// The exposition text of every series, with the scrape-time ones read now. Runs on the HTTP
    /// server's thread.
    func render() -> [UInt8] {
        scraping.withLock { _ in
            if let store = watched.withLock({ $0 }) {
                let leaseNs = UInt64(max(0, store.memory.leaseSeconds) * 1e9)
                let lastSeen = store.connections.snapshot()
                let now = DispatchTime.now().uptimeNanoseconds
                connections.set(Double(lastSeen.count))
                for t in tenants.withLock({ $0 }) { t.refresh(leaseNs: leaseNs, lastSeen: lastSeen, now: now) }
            }
            return registry.emitToBuffer()
        }
    }
}
