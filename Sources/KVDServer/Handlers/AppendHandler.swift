import KVDCore
import KVDProtocol

/// Append: K and V inline in the message, copied into the sequence's pages (all or nothing).
enum AppendHandler {
    static func handle(_ r: Kvd_V1_AppendRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_AppendResponse {
        let seq = entry.sequence
        let tokens = try TensorCheck.tokens(
            keys: r.hasKeys ? r.keys : nil, values: r.hasValues ? r.values : nil, layout: seq.layout,
            maxTokens: store.config.server.maxTokensPerAppend)
        try SequenceLimit.check(seq, adding: tokens, limit: store.config.server.maxSequenceTokens, "append")
        let ids = r.tokenIds.isEmpty ? nil : try TokenIDs.parse(r.tokenIds, field: "append.token_ids", expected: tokens)
        // Data's withUnsafeBytes is untyped-rethrows, so the typed error travels out as a Result.
        try PinQuota.check(entry, store, growingBy: seq.pagesNeeded(forTokens: tokens))
        let pagesBefore = store.space.journal == nil ? [] : seq.heads.map(\.pages.count)
        let first = try store.withRoom(pages: seq.pagesNeeded(forTokens: tokens)) { () throws(KVDError) in
            try r.keys.data.withUnsafeBytes { k in
                r.values.data.withUnsafeBytes { v in
                    Result { () throws(KVDError) in
                        try seq.append(keys: k, values: v, tokens: tokens, allocator: store.pages, memory: store.arena.pageMemory)
                    }
                }
            }.get()
        }
        store.space.journal?.appended(seq, tokens: tokens, pagesBefore: pagesBefore)
        PrefixRecorder.added(ids, entry, store)
        WindowFrees.apply(seq, store)
        var out = Kvd_V1_AppendResponse()
        out.length = UInt64(seq.length)
        out.firstPosition = UInt64(first)
        out.generation = seq.generation
        return out
    }
}
