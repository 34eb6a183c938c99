import Synchronization

/// What the memory manager reads about a sequence without entering its queue: who owns it, when it
/// was last touched, whether it is pinned, and how much it holds. The socket thread writes the touch
/// fields on every request; the sequence's queue refreshes the sizes after every request
/// (`SequenceEntry.refreshGauges`). Each field is one atomic, so a pass may see a slightly stale mix;
/// every decision taken on them is re-checked on the sequence's queue before it acts.
final class SequenceLease: Sendable {
    /// Uptime (ns) of the last request that named the sequence, and of the one before (what Stats
    /// reports as idle time: Stats itself is a request that names it).
    let lastAccess: Atomic<UInt64>
    let previousAccess: Atomic<UInt64>
    /// Connection number (ConnectionLeases) of the last connection that touched or adopted it.
    let owner: Atomic<UInt64>
    /// Owner of the open reservation (0 = none), and when it was made.
    let reservationOwner = Atomic<UInt64>(0)
    let reservationMade = Atomic<UInt64>(0)
    let pinned: Atomic<Bool>
    /// Pages held (including an open reservation's) and tokens held over all heads.
    let pages = Atomic<Int>(0)
    let tokens = Atomic<Int>(0)
    /// Times the manager compacted it, and its tokens right after the last of those: while the
    /// count is unchanged another pressure compaction would find nothing more to drop.
    let managerCompactions = Atomic<UInt32>(0)
    let tokensAfterManagerCompaction = Atomic<Int>(-1)
    /// LEASE_EXPIRED was published for the current orphan period (cleared by the next touch).
    let orphanAnnounced = Atomic<Bool>(false)

    init(owner: UInt64, now: UInt64, pinned: Bool) {
        lastAccess = Atomic(now)
        previousAccess = Atomic(now)
        self.owner = Atomic(owner)
        self.pinned = Atomic(pinned)
    }

    /// A request from connection `connection` named the sequence.
    func touch(by connection: UInt64, now: UInt64) {
        previousAccess.store(lastAccess.exchange(now, ordering: .relaxed), ordering: .relaxed)
        owner.store(connection, ordering: .relaxed)
        if orphanAnnounced.load(ordering: .relaxed) { orphanAnnounced.store(false, ordering: .relaxed) }
    }

    /// When the lease ends (uptime ns): the later of the sequence's last touch and its owner's last
    /// request, plus the lease. `lastSeen` is ConnectionLeases' snapshot.
    func expiry(lease: UInt64, lastSeen: [UInt64: UInt64]) -> UInt64 {
        let heard = max(lastAccess.load(ordering: .relaxed), lastSeen[owner.load(ordering: .relaxed)] ?? 0)
        return heard &+ lease
    }

    /// When the open reservation's lease ends, or nil when none is open.
    func reservationExpiry(lease: UInt64, lastSeen: [UInt64: UInt64]) -> UInt64? {
        let o = reservationOwner.load(ordering: .relaxed)
        guard o != 0 else { return nil }
        return max(reservationMade.load(ordering: .relaxed), lastSeen[o] ?? 0) &+ lease
    }
}
