import Prometheus

/// A Prometheus counter that follows a monotonic count someone else keeps (an `Atomic` in
/// `ManagerCounters` or `RemoteCounters`, which Stats also reads): each scrape adds what the source
/// gained since the previous one. The owner keeps counting as it always did; nothing on its path
/// changes. Only `TenantGauges.refresh` calls `follow`, under its scrape lock.
struct MirroredCounter {
    let counter: Counter
    private var exported: UInt64 = 0

    init(_ counter: Counter) { self.counter = counter }

    mutating func follow(_ source: UInt64) {
        guard source > exported else { return }
        counter.increment(by: Int64(clamping: source - exported))
        exported = source
    }
}
