import KVDCore
import KVDProtocol

/// CreateSequence: an empty sequence of a configured model.
enum CreateSequenceHandler {
    static func handle(_ r: Kvd_V1_CreateSequenceRequest, _ store: Store) throws(KVDError) -> Kvd_V1_CreateSequenceResponse {
        let model = try store.model(named: r.model)
        let entry = try store.create(model: model, requested: r.sequenceID, tenant: r.tenant)
        var out = Kvd_V1_CreateSequenceResponse()
        out.sequenceID = entry.sequence.id.raw
        out.generation = entry.sequence.generation
        return out
    }
}
