import KVDCore
import KVDProtocol

/// Commit: makes reserved tokens visible (or aborts the reservation).
enum CommitHandler {
    static func handle(_ r: Kvd_V1_CommitRequest, _ entry: SequenceEntry, _ store: Store) throws(KVDError) -> Kvd_V1_CommitResponse {
        let seq = entry.sequence
        let rid = ReservationID(r.reservationID)
        var out = Kvd_V1_CommitResponse()
        if r.abort {
            try seq.abort(rid, allocator: store.pages)
            out.firstPosition = UInt64(seq.length)
        } else {
            out.firstPosition = UInt64(try seq.commit(rid, tokens: Int(r.numTokens), allocator: store.pages))
        }
        out.length = UInt64(seq.length)
        out.generation = seq.generation
        return out
    }
}
