/// Remembers the last `capacity` request ids of each peer so a reused id is refused (a client that
/// reuses ids cannot tell replies apart). Owned by the socket thread only.
struct RecentRequestIDs {
    static let perPeer = 65_536
    static let maxPeers = 4_096

    private struct Peer {
        var ring: [UInt64] = []
        var next = 0
        var seen: Set<UInt64> = []
        var lastUse: UInt64 = 0

        mutating func record(_ id: UInt64, at clock: UInt64) -> Bool {
            lastUse = clock
            if seen.contains(id) { return false }
            if ring.count < RecentRequestIDs.perPeer {
                ring.append(id)
            } else {
                seen.remove(ring[next])
                ring[next] = id
                next = (next + 1) % RecentRequestIDs.perPeer
            }
            seen.insert(id)
            return true
        }
    }

    private var peers: [[UInt8]: Peer] = [:]
    private var clock: UInt64 = 0

    /// Records `id` for `peer`; false when the peer used it recently.
    mutating func record(_ id: UInt64, peer: [UInt8]) -> Bool {
        clock += 1
        if peers[peer] == nil, peers.count >= Self.maxPeers, let oldest = peers.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            peers.removeValue(forKey: oldest)
        }
        // Mutated in place: a copy taken out of the dictionary would share the set's storage, and
        // the insert would then copy all of it (up to 65,536 ids) on every request.
        return peers[peer, default: Peer()].record(id, at: clock)
    }
}
