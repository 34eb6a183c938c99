import Synchronization

/// When each connection was last heard from, for leases. A connection is a ZeroMQ routing identity;
/// it gets a small number the first time it sends anything, and sequences and reservations record
/// their owner by that number. Any request from a connection renews everything it owns, so a lease
/// is "the owner's last request, or the sequence's own last touch, plus memory.lease_seconds".
final class ConnectionLeases: Sendable {
    private struct State {
        var numbers: [[UInt8]: UInt64] = [:]
        var lastSeen: [UInt64: UInt64] = [:]
        var next: UInt64 = 1
    }
    private let state = Mutex(State())

    /// Records that `identity` sent a request at `now` (uptime ns); returns its number. Socket thread.
    func touch(_ identity: [UInt8], now: UInt64) -> UInt64 {
        state.withLock { s in
            let n: UInt64
            if let known = s.numbers[identity] {
                n = known
            } else {
                n = s.next
                s.next += 1
                s.numbers[identity] = n
            }
            s.lastSeen[n] = now
            return n
        }
    }

    /// Last request time of every connection (number → uptime ns), for one manager pass.
    func snapshot() -> [UInt64: UInt64] { state.withLock { $0.lastSeen } }

    /// Forgets connections silent since before `cutoff`: whatever they owned has expired by then,
    /// and a forgotten owner counts as never heard from (only the sequence's own touch renews it).
    func forget(silentSince cutoff: UInt64) {
        state.withLock { s in
            let stale = s.lastSeen.filter { $0.value < cutoff }.map(\.key)
            guard !stale.isEmpty else { return }
            let gone = Set(stale)
            for n in stale { s.lastSeen.removeValue(forKey: n) }
            s.numbers = s.numbers.filter { !gone.contains($0.value) }
        }
    }

    var count: Int { state.withLock { $0.lastSeen.count } }
}
