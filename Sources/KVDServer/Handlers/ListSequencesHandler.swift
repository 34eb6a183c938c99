import KVDCore
import KVDProtocol

/// ListSequences: every live sequence of the caller's tenant, by id. Runs on a worker and reads
/// each sequence on its own queue (after the requests queued before), like RankLayers; it touches
/// no lease, so listing never keeps an abandoned sequence alive.
enum ListSequencesHandler {
    static func handle(_ store: TenantStore) -> Kvd_V1_ListSequencesResponse {
        var out = Kvd_V1_ListSequencesResponse()
        out.tenant = store.space.name
        for entry in store.space.allEntries.sorted(by: { $0.id < $1.id }) {
            let stats: Kvd_V1_SequenceStats? = entry.sync { state in
                // Released between the table read and now: it is gone, not listed.
                state.sequence.isReleased ? nil : StatsHandler.sequence(state, store, lastTouch: state.lease.lastAccess.load(ordering: .relaxed))
            }
            if let stats { out.sequences.append(stats) }
        }
        return out
    }
}
