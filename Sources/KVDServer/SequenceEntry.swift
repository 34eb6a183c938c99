import Dispatch
import KVDCore
import KVDPluginAPI
import Synchronization

/// A live sequence as the server holds it: its serial queue, and its state, which only code running
/// on that queue can reach (`onQueue`). Requests for one sequence therefore run one at a time, in
/// arrival order, while different sequences proceed in parallel on the worker pool.
final class SequenceEntry: Sendable {
    let id: UInt64
    /// The tenant it belongs to (its pages live in that tenant's segment).
    let space: TenantSpace
    let queue: DispatchQueue
    /// Requests (and memory-manager actions) queued on `queue` and not finished. Whoever wants to run
    /// on an idle queue without waiting claims it by raising this from 0 to 1 (`tryClaim`): the
    /// socket thread for cheap requests, the memory manager for its actions. So the manager never
    /// acts on a sequence while a request for it is queued or running, and the socket thread never
    /// waits behind the manager.
    let pending = Atomic<Int>(0)
    /// Owner, last touch, pin and sizes, readable without entering the queue.
    let lease: SequenceLease
    /// Safe without a lock because the only way to it is `onQueue`, which traps unless called on
    /// `queue`, a serial queue: every access is ordered by the queue. (`nonisolated(unsafe)` rather
    /// than a Mutex: a lock would be uncontended by construction, and the precondition states the
    /// actual rule.)
    nonisolated(unsafe) private let state: SequenceState

    init(
        sequence: KVSequence, space: TenantSpace, target: DispatchQueue, owner: UInt64, now: UInt64, pinned: Bool,
        prefix: PrefixTracker? = nil
    ) {
        id = sequence.id.raw
        self.space = space
        let lease = SequenceLease(owner: owner, now: now, pinned: pinned)
        self.lease = lease
        state = SequenceState(sequence: sequence, lease: lease)
        state.prefix = prefix
        queue = DispatchQueue(label: "kvd.sequence.\(sequence.id.raw)", target: target)
    }

    /// Runs `body` with the sequence's state. Must be called on `queue` (checked): from a block
    /// submitted to it, or inside `queue.sync`.
    func onQueue<T, E: Error>(_ body: (SequenceState) throws(E) -> T) throws(E) -> T {
        dispatchPrecondition(condition: .onQueue(queue))
        return try body(state)
    }

    /// `body` on the sequence's queue, after everything queued before it (blocks the caller).
    func sync<T>(_ body: (SequenceState) -> T) -> T {
        queue.sync { onQueue(body) }
    }

    /// Claims the queue if nothing is queued or running on it; the caller then runs on it (`sync`)
    /// and calls `unclaim`. False when busy.
    func tryClaim() -> Bool {
        pending.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged
    }

    func unclaim() { pending.subtract(1, ordering: .releasing) }

    /// Copies the sizes the memory manager ranks by out of the state. On the queue, after every request.
    func refreshGauges(_ state: SequenceState) {
        dispatchPrecondition(condition: .onQueue(queue))
        let seq = state.sequence
        lease.pages.store(seq.pageCount, ordering: .relaxed)
        lease.tokens.store(seq.tokensHeld, ordering: .relaxed)
        lease.reservationMade.store(state.reservationMade, ordering: .relaxed)
        lease.reservationOwner.store(seq.reservation == nil ? 0 : state.reservationConnection, ordering: .relaxed)
    }
}

/// Everything mutable about a live sequence. Not Sendable: it is confined to its entry's queue.
final class SequenceState {
    let sequence: KVSequence
    /// The entry's lease and gauges (atomics, also read off the queue).
    let lease: SequenceLease
    /// This sequence's gather/stage buffer in the staging area (offsets inside the staging area).
    var staging: Range<Int>?
    /// The connection (routing identity) that opened the current reservation; only it may commit.
    var reservationOwner: [UInt8]?
    /// The same connection's number (ConnectionLeases), whose lease keeps the reservation open.
    var reservationConnection: UInt64 = 0
    /// When it was made (uptime ns); the reservation's lease runs from the later of this and its
    /// owner's last request.
    var reservationMade: UInt64 = 0
    /// The window queries of the last Compact that sent some (while the tenant's kept queries fit
    /// memory.keep_queries_bytes), so that pressure compaction can run a query-based policy.
    private(set) var keptObservation: Observation?

    /// Keeps `o` (nil: forgets) if the tenant's kept queries stay within `budget` bytes; otherwise
    /// keeps nothing (the sequence's older queries describe older tokens, and are dropped too).
    func keepObservation(_ o: Observation?, in space: TenantSpace, budget: Int) {
        let old = keptObservation.map { $0.queries.count * MemoryLayout<Float>.size } ?? 0
        var new = o.map { $0.queries.count * MemoryLayout<Float>.size } ?? 0
        if new > 0, space.keptQueryBytes.load(ordering: .relaxed) - old + new > budget { new = 0 }
        keptObservation = new > 0 ? o : nil
        space.keptQueryBytes.add(new - old, ordering: .relaxed)
    }
    /// What its last compaction ran ("snapkv", "pressure (knorm)"), for Stats and listings.
    var lastMethod = ""
    private var lastReservation: UInt64 = 0
    /// Block hashes of its tokens so far, while every append carried token ids and it was never
    /// compacted (nil otherwise, for good): what indexes its pages for prefix reuse.
    var prefix: PrefixTracker?

    init(sequence: KVSequence, lease: SequenceLease) {
        self.sequence = sequence
        self.lease = lease
    }

    /// This sequence's staging buffer, grown (reallocated) when smaller than `bytes`.
    func stagingBuffer(bytes: Int, _ allocator: RangeAllocator) throws(KVDError) -> Range<Int> {
        if let current = staging, current.count >= bytes { return current }
        if let current = staging {
            allocator.free(current)
            staging = nil
        }
        let r = try allocator.allocate(max(bytes, 1))
        staging = r
        return r
    }

    func nextReservationID() -> ReservationID {
        lastReservation += 1
        return ReservationID(lastReservation)
    }
}
