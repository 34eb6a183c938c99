import KVDCore
import KVDProtocol

/// Evict: the memory manager's eviction of one sequence, on demand (admin only). Runs on the
/// sequence's queue after the requests queued before it, through `ManagerActions.release`, so it
/// does what a pressure eviction does: remote offload (after the offload policy's compaction) when
/// configured, the EVICTED answer for later requests, the event and the counters.
enum EvictHandler {
    static func handle(_ r: Kvd_V1_EvictRequest, _ state: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_EvictResponse {
        try AdminCheck.require("evict", store)
        let seq = state.sequence
        let id = r.sequenceID
        guard !state.lease.pinned.load(ordering: .relaxed) else {
            throw .failedPrecondition("sequence \(id) is pinned; unpin it first (kvctl unpin \(id))")
        }
        guard seq.reservation == nil else {
            throw .failedPrecondition("sequence \(id) has an open reservation; commit or abort it first")
        }
        let entry = try store.entry(id)
        let tokens = seq.tokensHeld
        let offloads = store.shared.remote.map { $0.settings.offloadEvicted && tokens > 0 } ?? false
        let why = "evicted on an admin's request"
        let pages = ManagerActions.release(entry, state, store.shared, kind: .evicted, record: why, why: why)
        var out = Kvd_V1_EvictResponse()
        out.sequenceID = id
        out.pagesFreed = UInt32(clamping: pages)
        out.bytesFreed = UInt64(max(0, pages)) &* UInt64(store.arena.sizing.pageBytes)
        out.offloaded = offloads
        out.tokensHeld = UInt64(tokens)
        return out
    }
}
