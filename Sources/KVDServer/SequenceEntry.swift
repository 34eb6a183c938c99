import Dispatch
import KVDCore
import Synchronization

/// A live sequence plus what the server keeps beside it. Requests for it run one at a time, in arrival
/// order, on `queue`; every mutable field here is touched only there.
final class SequenceEntry: @unchecked Sendable {
    let sequence: KVSequence
    let queue: DispatchQueue
    /// Requests queued on `queue` and not finished. Only the socket thread adds to it, so when it
    /// reads 0 there the queue is idle and stays idle until that thread queues something.
    let pending = Atomic<Int>(0)
    /// This sequence's gather buffer in the staging area (offsets inside the staging area).
    var staging: Range<Int>?
    private var lastReservation: UInt64 = 0

    init(sequence: KVSequence, target: DispatchQueue) {
        self.sequence = sequence
        self.queue = DispatchQueue(label: "kvd.sequence.\(sequence.id.raw)", target: target)
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
