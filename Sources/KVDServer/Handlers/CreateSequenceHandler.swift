import KVDCore
import KVDProtocol

/// CreateSequence: an empty sequence of a configured model, or one that starts with the cached K/V
/// of the longest indexed prefix of `adopt_token_ids` (shared pages; docs/PREFIX.md).
enum CreateSequenceHandler {
    static func handle(_ r: Kvd_V1_CreateSequenceRequest, _ store: TenantStore) throws(KVDError) -> Kvd_V1_CreateSequenceResponse {
        // The tenant comes from the connection (Hello); the request's field is a label Stats reports.
        // A label naming another configured tenant is refused: it reads like an attempt to act as it.
        guard r.tenant.isEmpty || r.tenant == store.space.name || store.shared.space(named: r.tenant) == nil else {
            throw .permissionDenied(
                "create_sequence: tenant '\(r.tenant)' is not this connection's tenant ('\(store.space.name)'); the tenant comes from Hello — leave the label empty or say Hello as that tenant")
        }
        let model = try store.model(named: r.model)
        if r.pinned, store.space.tenant.maxPinnedPages > 0, store.space.pinnedPages >= store.space.tenant.maxPinnedPages {
            throw .resourceExhausted(
                "create_sequence: tenant '\(store.space.name)' pinned sequences already hold its quotas.pinned_pages (\(store.space.tenant.maxPinnedPages)); create it unpinned or unpin others")
        }
        let adoptIDs = try TokenIDs.parse(r.adoptTokenIds, field: "create_sequence.adopt_token_ids")
        let limit = store.config.server.maxSequenceTokens
        guard adoptIDs.count <= limit else {
            throw .invalidArgument(
                "create_sequence.adopt_token_ids: \(adoptIDs.count) tokens is more than server.max_sequence_tokens (\(limit)); send at most that many")
        }
        let label = r.tenant.isEmpty ? store.space.name : r.tenant
        let prefix = store.space.prefix
        // Blocks other daemons published, fetched before the adopt below looks (on a worker).
        if !adoptIDs.isEmpty, let hasher = prefix.hasher(model.name) {
            RemotePrefixImport.importMissing(hasher.chain(tokens: adoptIDs, blockTokens: model.pageTokens), model: model, store)
        }
        let pages = store.pages
        let entry = try store.create(requested: r.sequenceID, pinned: r.pinned) { id throws(KVDError) in
            guard !adoptIDs.isEmpty, let hasher = prefix.hasher(model.name) else {
                return (KVSequence(id: id, layout: model, tenant: label), PrefixRecorder.fresh(model, prefix))
            }
            let hashes = hasher.chain(tokens: adoptIDs, blockTokens: model.pageTokens)
            return try prefix.adopt(hashes) { perHead, found throws(KVDError) in
                guard !found.isEmpty else {
                    return (KVSequence(id: id, layout: model, tenant: label), PrefixTracker(pageTokens: model.pageTokens))
                }
                // found.count <= adoptIDs.count / page_tokens, so this cannot overflow.
                let seq = try KVSequence.adopt(
                    id: id, layout: model, tenant: label, pages: perHead, tokens: found.count * model.pageTokens, allocator: pages)
                return (seq, PrefixTracker(pageTokens: model.pageTokens, hashes: found))
            }
        }
        var out = Kvd_V1_CreateSequenceResponse()
        out.sequenceID = entry.id
        out.generation = 1
        out.adoptedTokens = UInt64(entry.sync { state in
            entry.refreshGauges(state)
            return state.sequence.length
        })
        return out
    }
}
