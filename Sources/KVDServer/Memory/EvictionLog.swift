import Foundation
import KVDCore
import Synchronization

/// Sequences the memory manager took back, so that their ids answer EVICTED (saying what happened
/// and when) instead of a bare NOT_FOUND. Bounded: the oldest records go first; creating a sequence
/// with a recorded id forgets its record.
final class EvictionLog: Sendable {
    struct Record: Sendable {
        let what: String
        let when: Date
        /// Its K/V went to the remote tier: Restore brings it back.
        let offloaded: Bool
    }
    private struct State {
        var records: [UInt64: Record] = [:]
        var order: [UInt64] = []
        var head = 0
    }
    private let state = Mutex(State())
    let capacity: Int

    init(capacity: Int = 65536) { self.capacity = capacity }

    func record(_ id: UInt64, _ what: String, at when: Date = Date(), offloaded: Bool = false) {
        state.withLock { s in
            if s.records.updateValue(Record(what: what, when: when, offloaded: offloaded), forKey: id) == nil { s.order.append(id) }
            // Drop the oldest records; compact the order list once half of it is dead.
            while s.records.count > capacity, s.head < s.order.count {
                s.records.removeValue(forKey: s.order[s.head])
                s.head += 1
            }
            if s.head > capacity {
                s.order.removeFirst(s.head)
                s.head = 0
            }
        }
    }

    /// Whether `id`'s record says its K/V went to the remote tier.
    func offloaded(_ id: UInt64) -> Bool { state.withLock { $0.records[id]?.offloaded ?? false } }

    func forget(_ id: UInt64) { _ = state.withLock { $0.records.removeValue(forKey: id) } }

    /// The EVICTED error for `id`, or nil when the manager never took it back.
    func error(for id: UInt64) -> KVDError? {
        guard let r = state.withLock({ $0.records[id] }) else { return nil }
        let stamp = ISO8601DateFormatter().string(from: r.when)
        if r.offloaded {
            return .evicted("sequence \(id) was \(r.what) at \(stamp); its K/V went to the remote tier: send Restore to bring it back")
        }
        return .evicted("sequence \(id) was \(r.what) at \(stamp); its K/V is gone: create it again and re-run prefill")
    }
}
