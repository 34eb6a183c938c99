import Dispatch
import KVDCore
import Synchronization

/// A live sequence as the server holds it: its serial queue, and its state, which only code running
/// on that queue can reach (`onQueue`). Requests for one sequence therefore run one at a time, in
/// arrival order, while different sequences proceed in parallel on the worker pool.
final class SequenceEntry: Sendable {
    let id: UInt64
    /// The tenant it belongs to (its pages live in that tenant's segment).
    let space: TenantSpace
    let queue: DispatchQueue
    /// Requests queued on `queue` and not finished. Only the socket thread adds to it, so when it
    /// reads 0 there the queue is idle and stays idle until that thread queues something.
    let pending = Atomic<Int>(0)
    /// Safe without a lock because the only way to it is `onQueue`, which traps unless called on
    /// `queue`, a serial queue: every access is ordered by the queue. (`nonisolated(unsafe)` rather
    /// than a Mutex: a lock would be uncontended by construction, and the precondition states the
    /// actual rule.)
    nonisolated(unsafe) private let state: SequenceState

    init(sequence: KVSequence, space: TenantSpace, target: DispatchQueue) {
        id = sequence.id.raw
        self.space = space
        state = SequenceState(sequence: sequence)
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
}

/// Everything mutable about a live sequence. Not Sendable: it is confined to its entry's queue.
final class SequenceState {
    let sequence: KVSequence
    /// This sequence's gather/stage buffer in the staging area (offsets inside the staging area).
    var staging: Range<Int>?
    /// The connection (routing identity) that opened the current reservation; only it may commit.
    var reservationOwner: [UInt8]?
    private var lastReservation: UInt64 = 0

    init(sequence: KVSequence) {
        self.sequence = sequence
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
