/// Remembers each connection's recent request ids so a reused id is refused (a client that reuses
/// ids cannot tell replies apart). Bounded in count, bytes and time:
/// - at most `window` ids per connection (a ring plus a set: about 24 bytes per id, so the default
///   1,024 costs ~24 KiB per connection);
/// - a connection quiet for `idleSeconds` is forgotten (its ids and their memory freed);
/// - at most `maxPeers` connections; beyond that the quietest one is forgotten first.
/// So the whole structure stays under `maxPeers × window × ~24` bytes. Owned by the socket thread.
struct RecentRequestIDs: ~Copyable {
    let window: Int
    let idleNanoseconds: UInt64
    let maxPeers: Int

    private struct Peer {
        var ring: [UInt64] = []
        var next = 0
        var seen: Set<UInt64> = []
        var lastUse: UInt64 = 0

        mutating func record(_ id: UInt64, window: Int, at now: UInt64) -> Bool {
            lastUse = now
            if seen.contains(id) { return false }
            if ring.count < window {
                ring.append(id)
            } else {
                seen.remove(ring[next])
                ring[next] = id
                next = (next + 1) % window
            }
            seen.insert(id)
            return true
        }
    }

    private var peers: [[UInt8]: Peer] = [:]
    private var lastSweep: UInt64 = 0

    init(window: Int = 1024, idleSeconds: Int = 300, maxPeers: Int = 4096) {
        self.window = window
        idleNanoseconds = UInt64(idleSeconds) * 1_000_000_000
        self.maxPeers = maxPeers
    }

    var peerCount: Int { peers.count }

    /// Records `id` for `peer` at time `now` (monotonic nanoseconds); false when the peer used it
    /// within its window.
    mutating func record(_ id: UInt64, peer: [UInt8], now: UInt64) -> Bool {
        sweep(now: now)
        if peers[peer] == nil, peers.count >= maxPeers, let oldest = peers.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            peers.removeValue(forKey: oldest)
        }
        // Mutated in place: a copy taken out of the dictionary would share the set's storage, and
        // the insert would then copy all of it on every request.
        return peers[peer, default: Peer()].record(id, window: window, at: now)
    }

    /// Forgets connections quiet for longer than the idle time; runs at most once a second.
    mutating func sweep(now: UInt64) {
        guard now &- lastSweep >= 1_000_000_000 else { return }
        lastSweep = now
        let idle = idleNanoseconds
        peers = peers.filter { now &- $0.value.lastUse < idle }
    }
}
