import KVDCore
import KVDProtocol

/// CreateSequence: an empty sequence of a configured model.
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
        let entry = try store.create(
            model: model, requested: r.sequenceID, label: r.tenant.isEmpty ? store.space.name : r.tenant, pinned: r.pinned)
        var out = Kvd_V1_CreateSequenceResponse()
        out.sequenceID = entry.id
        out.generation = 1
        return out
    }
}
