import KVDCore
import KVDProtocol

/// Lookup: how much of a prompt the tenant's prefix cache holds. Reads only the index (one lock),
/// so it runs on the socket thread — unless the remote tier shares prefixes: then it runs on a
/// worker and first takes the blocks other daemons published (`RemotePrefixImport`).
enum LookupHandler {
    static func handle(_ r: Kvd_V1_LookupRequest, _ store: TenantStore) throws(KVDError) -> Kvd_V1_LookupResponse {
        let model = try store.model(named: r.model)
        let ids = try TokenIDs.parse(r.tokenIds, field: "lookup.token_ids")
        let limit = store.config.server.maxSequenceTokens
        guard ids.count <= limit else {
            throw .invalidArgument("lookup.token_ids: \(ids.count) tokens is more than server.max_sequence_tokens (\(limit)); send at most that many")
        }
        var out = Kvd_V1_LookupResponse()
        out.pageTokens = UInt32(model.pageTokens)
        guard let hasher = store.space.prefix.hasher(model.name) else { return out }
        let hashes = hasher.chain(tokens: ids, blockTokens: model.pageTokens)
        RemotePrefixImport.importMissing(hashes, model: model, store)
        let blocks = store.space.prefix.lookup(hashes)
        out.pagesPerHead = UInt32(blocks)
        out.tokens = UInt64(blocks) * UInt64(model.pageTokens)
        return out
    }
}
