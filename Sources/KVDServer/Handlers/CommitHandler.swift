import KVDCore
import KVDProtocol

/// Commit: makes reserved tokens visible, all of them or (keep_reserved) the next few, or aborts what is
/// still reserved.
enum CommitHandler {
    static func handle(_ r: Kvd_V1_CommitRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_CommitResponse {
        let seq = entry.sequence
        let rid = ReservationID(r.reservationID)
        // A reservation belongs to the connection that made it: another client writing into those
        // slots and committing them would publish bytes the owner never wrote.
        if let open = seq.reservation, open.id == rid, let owner = entry.reservationOwner, owner != store.connection {
            throw .permissionDenied("commit: \(rid) was made by another connection; only that connection may commit or abort it")
        }
        var out = Kvd_V1_CommitResponse()
        if r.abort, !r.tokenIds.isEmpty {
            throw .invalidArgument("commit.token_ids: an abort commits no tokens; send token_ids only with the tokens committed")
        }
        if r.abort, r.keepReserved {
            throw .invalidArgument("commit: abort drops what is still reserved and keep_reserved keeps it; send one of them")
        }
        let ids = r.abort || r.tokenIds.isEmpty ? nil : try TokenIDs.parse(r.tokenIds, field: "commit.token_ids", expected: Int(r.numTokens))
        if r.abort {
            try seq.abort(rid, allocator: store.pages)
            out.firstPosition = UInt64(seq.length)
        } else {
            let pagesBefore = store.space.journal == nil ? [] : seq.heads.map(\.pages.count)
            out.firstPosition = UInt64(try seq.commit(rid, tokens: Int(r.numTokens), keepReserved: r.keepReserved, allocator: store.pages))
            store.space.journal?.appended(seq, tokens: Int(r.numTokens), pagesBefore: pagesBefore)
            PrefixRecorder.added(ids, entry, store)
            WindowFrees.apply(seq, store)
        }
        out.reservedRemaining = UInt32(seq.reservation?.tokens ?? 0)
        out.length = UInt64(seq.length)
        out.generation = seq.generation
        return out
    }
}
