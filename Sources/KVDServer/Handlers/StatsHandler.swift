import KVDCore
import KVDProtocol

/// Stats: arena-wide figures, and one sequence's detail when asked (that part runs on its queue).
enum StatsHandler {
    static func arena(_ store: TenantStore) -> Kvd_V1_StatsResponse {
        var out = Kvd_V1_StatsResponse()
        out.totalPages = UInt32(store.pages.pageCount)
        out.freePages = UInt32(store.pages.freeCount)
        out.pageBytes = UInt64(store.arena.sizing.pageBytes)
        out.sequences = UInt32(store.space.sequenceCount)
        out.stagingBytes = UInt64(store.staging.capacity)
        out.stagingUsedBytes = UInt64(store.staging.usedBytes)
        out.requests = store.shared.requests.load(ordering: .relaxed)
        out.errors = store.shared.errors.load(ordering: .relaxed)
        return out
    }

    static func handle(_ r: Kvd_V1_StatsRequest, _ entry: SequenceState, _ store: TenantStore) -> Kvd_V1_StatsResponse {
        var out = arena(store)
        let seq = entry.sequence
        var s = Kvd_V1_SequenceStats()
        s.sequenceID = seq.id.raw
        s.model = seq.layout.name
        s.tenant = seq.tenant
        s.length = UInt64(seq.length)
        s.generation = seq.generation
        s.pages = UInt32(seq.pageCount)
        s.tokensHeld = UInt64(seq.tokensHeld)
        s.reservedTokens = UInt32(seq.reservation?.tokens ?? 0)
        s.stagingBytes = UInt64(entry.staging?.count ?? 0)
        s.aliasedLayers = UInt32(seq.aliases.compactMap { $0 }.count)
        out.sequence = s
        return out
    }
}
