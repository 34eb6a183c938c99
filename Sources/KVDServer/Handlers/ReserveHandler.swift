import KVDCore
import KVDProtocol

/// Reserve: pages for n more tokens per head; the client writes K/V there itself, then commits.
enum ReserveHandler {
    static func handle(_ r: Kvd_V1_ReserveRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_ReserveResponse {
        let seq = entry.sequence
        let n = Int(r.numTokens)
        guard n >= 1 else { throw .invalidArgument("reserve: num_tokens must be at least 1") }
        let limit = store.config.server.maxTokensPerAppend
        guard n <= limit else {
            throw .invalidArgument("reserve: num_tokens \(n) is more than server.max_tokens_per_append (\(limit)); reserve less")
        }
        try SequenceLimit.check(seq, adding: n, limit: store.config.server.maxSequenceTokens, "reserve")
        let rid = entry.nextReservationID()
        try PinQuota.check(entry, store, growingBy: seq.pagesNeeded(forTokens: n))
        let runs = try store.withRoom(pages: seq.pagesNeeded(forTokens: n)) { () throws(KVDError) in
            try seq.reserve(tokens: n, id: rid, allocator: store.pages)
        }
        entry.reservationOwner = store.connection
        entry.reservationConnection = store.connectionNumber
        entry.reservationMade = store.now
        let m = seq.layout
        let g = store.arena.geometry
        var out = Kvd_V1_ReserveResponse()
        out.reservationID = rid.raw
        out.numTokens = r.numTokens
        out.pageTokens = UInt32(m.pageTokens)
        out.heads = runs.enumerated().map { h, headRuns in
            var hs = Kvd_V1_HeadSlots()
            hs.layer = UInt32(h / m.kvHeads)
            hs.head = UInt32(h % m.kvHeads)
            if r.slots { hs.slots = headRuns.map { Kvd_V1_Slot(RunLocation($0, g, m)) } }
            hs.aliased = seq.isAliased(head: h)
            hs.firstSlot = UInt32(headRuns.first?.slot ?? 0)
            hs.pageIds = littleEndianBytes(headRuns.map(\.page.raw))
            return hs
        }
        return out
    }
}
