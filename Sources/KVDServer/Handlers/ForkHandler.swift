import KVDCore
import KVDProtocol

/// Fork: a new sequence in the same tenant holding the source's first `length` tokens (whole pages
/// shared, the partial one copied). Runs on the source's queue, so the source does not change
/// meanwhile; when the copies do not fit, waits for the memory manager like an Append.
enum ForkHandler {
    static func handle(_ r: Kvd_V1_ForkRequest, _ state: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_ForkResponse {
        let source = state.sequence
        guard r.length <= UInt64(source.length) else {
            throw .invalidArgument("fork.length \(r.length) is more than the \(source.length) tokens sequence \(source.id.raw) holds")
        }
        let n = Int(r.length)
        // The fork keeps indexing its pages only if the source's hashes cover its first n tokens.
        let tracker = state.prefix?.prefix(n)
        let pages = store.pages
        let memory = store.arena.pageMemory
        // A partly filled last page is copied: one fresh page per head, which may need the memory
        // manager to make room first (the source is busy on this queue, so it is never touched).
        let fresh = n % source.layout.pageTokens == 0 ? 0 : source.layout.headCount
        let entry = try store.withRoom(pages: fresh) { () throws(KVDError) in
            try store.create(requested: r.newSequenceID, pinned: false) { id throws(KVDError) in
                (try source.fork(length: n, newID: id, allocator: pages, memory: memory), tracker)
            }
        }
        var out = Kvd_V1_ForkResponse()
        out.sequenceID = entry.id
        out.length = UInt64(n)
        out.generation = entry.sync { s in
            entry.refreshGauges(s)
            return s.sequence.generation
        }
        return out
    }
}
