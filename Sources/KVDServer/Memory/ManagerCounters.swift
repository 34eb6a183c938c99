import Synchronization

/// What the memory manager did in one tenant's segment, for Stats (MemoryStats).
final class ManagerCounters: Sendable {
    let reservationsAborted = Atomic<UInt64>(0)
    let reservationsAbortedPages = Atomic<UInt64>(0)
    let orphansReleased = Atomic<UInt64>(0)
    let orphansReleasedPages = Atomic<UInt64>(0)
    let compactions = Atomic<UInt64>(0)
    let compactionsPages = Atomic<UInt64>(0)
    let evictions = Atomic<UInt64>(0)
    let evictionsPages = Atomic<UInt64>(0)
    let reclaimPasses = Atomic<UInt64>(0)
    let synchronousReclaims = Atomic<UInt64>(0)
    let lastReclaimMicroseconds = Atomic<UInt64>(0)
    let lastReclaimReachedLow = Atomic<Bool>(true)
    /// Events about this tenant's sequences handed to the events endpoint.
    let eventsPublished = Atomic<UInt64>(0)
    /// Pages sliding-window layers dropped after appends (not a manager action, but memory the
    /// tenant got back without one), and how many of them went back to the free list at once.
    let windowFreedPages = Atomic<UInt64>(0)
    let windowReturnedPages = Atomic<UInt64>(0)

    static func add(_ counter: borrowing Atomic<UInt64>, _ pages: borrowing Atomic<UInt64>, freed: Int) {
        counter.add(1, ordering: .relaxed)
        pages.add(UInt64(max(0, freed)), ordering: .relaxed)
    }
}
