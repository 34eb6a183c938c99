import Dispatch
import KVDCore

/// A live sequence plus what the server keeps beside it. Requests for it run one at a time, in arrival
/// order, on `queue`; every mutable field here is touched only there.
final class SequenceEntry: @unchecked Sendable {
    let sequence: KVSequence
    let queue: DispatchQueue
    /// This sequence's gather buffer in the staging area (offsets inside the staging area).
    var staging: Range<Int>?
    private var lastReservation: UInt64 = 0

    init(sequence: KVSequence, target: DispatchQueue) {
        self.sequence = sequence
        self.queue = DispatchQueue(label: "kvd.sequence.\(sequence.id.raw)", target: target)
    }

    func nextReservationID() -> ReservationID {
        lastReservation += 1
        return ReservationID(lastReservation)
    }
}
