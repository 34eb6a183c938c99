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
    }

    private var peers: [[UInt8]: Peer] = [:]
    private var clock: UInt64 = 0

    /// Records `id` for `peer`; false when the peer used it recently.
    mutating func record(_ id: UInt64, peer: [UInt8]) -> Bool {
        clock += 1
        if peers[peer] == nil, peers.count >= Self.maxPeers, let oldest = peers.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            peers.removeValue(forKey: oldest)
        }
        var p = peers[peer] ?? Peer()
        defer { peers[peer] = p }
        p.lastUse = clock
        if p.seen.contains(id) { return false }
        if p.ring.count < Self.perPeer {
            p.ring.append(id)
        } else {
            p.seen.remove(p.ring[p.next])
            p.ring[p.next] = id
            p.next = (p.next + 1) % Self.perPeer
        }
        p.seen.insert(id)
        return true
    }
}
