import KVDCore
import KVDProtocol

/// Release: every page, reservation and staging buffer of the sequence goes back; the id is forgotten.
enum ReleaseHandler {
    static func handle(_ r: Kvd_V1_ReleaseRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_ReleaseResponse {
        // Recorded first: once the pages are free another sequence may take and record them.
        store.space.journal?.record(.release(id: entry.sequence.id.raw))
        let freed = entry.sequence.release(allocator: store.pages)
        if let s = entry.staging {
            store.staging.free(s)
            entry.staging = nil
        }
        entry.keepObservation(nil, in: store.space, budget: 0)
        store.remove(id: entry.sequence.id.raw)
        var out = Kvd_V1_ReleaseResponse()
        out.pagesFreed = UInt32(freed)
        out.bytesFreed = UInt64(freed * store.arena.sizing.pageBytes)
        return out
    }
}
