import KVDCore
import KVDProtocol

/// Pin / unpin: a pinned sequence is never compressed or evicted by the memory manager. Pinning
/// counts the sequence's pages against the tenant's quotas.pinned_pages.
enum PinHandler {
    static func handle(_ r: Kvd_V1_PinRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_PinResponse {
        let wasPinned = entry.lease.pinned.load(ordering: .relaxed)
        if r.pinned, !wasPinned {
            try PinQuota.check(entry, store, growingBy: entry.sequence.pageCount, pinning: true)
        }
        entry.lease.pinned.store(r.pinned, ordering: .relaxed)
        if r.pinned != wasPinned { store.space.journal?.record(.pin(id: entry.sequence.id.raw, pinned: r.pinned)) }
        var out = Kvd_V1_PinResponse()
        out.pinned = r.pinned
        out.pinnedPages = UInt32(clamping: store.space.pinnedPages)
        return out
    }
}

/// The tenant's quota of pages in pinned sequences (quotas.pinned_pages).
enum PinQuota {
    /// Refuses `pages` more pinned pages when they would pass the quota: a pinned sequence growing,
    /// or (`pinning`) a sequence of that many pages being pinned.
    static func check(_ entry: SequenceState, _ store: TenantStore, growingBy pages: Int, pinning: Bool = false) throws(KVDError) {
        let quota = store.space.tenant.maxPinnedPages
        guard quota > 0, pages > 0, pinning || entry.lease.pinned.load(ordering: .relaxed) else { return }
        let held = store.space.pinnedPages
        guard held + pages <= quota else {
            let what = pinning ? "pinning sequence \(entry.sequence.id.raw) (\(pages) pages)" : "growing pinned sequence \(entry.sequence.id.raw) by \(pages) pages"
            throw .resourceExhausted(
                "tenant '\(store.space.name)' pinned-page quota (quotas.pinned_pages) is \(quota) pages and pinned sequences hold \(held): "
                    + "\(what) would pass it; unpin or release pinned sequences, or raise the quota")
        }
    }
}
