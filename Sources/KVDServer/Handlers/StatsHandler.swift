import Dispatch
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
        out.memory = memory(store)
        out.prefix = store.space.prefix.stats(pageBytes: store.arena.sizing.pageBytes)
        out.remote = remote(store)
        return out
    }

    static func remote(_ store: TenantStore) -> Kvd_V1_RemoteStats {
        var r = Kvd_V1_RemoteStats()
        guard let tier = store.shared.remote else { return r }
        let c = store.space.remoteCounters
        r.enabled = true
        r.offloaded = c.offloaded.load(ordering: .relaxed)
        r.offloadedBytes = c.offloadedBytes.load(ordering: .relaxed)
        r.offloadFailures = c.offloadFailures.load(ordering: .relaxed)
        r.offloadDropped = c.offloadDropped.load(ordering: .relaxed)
        r.restored = c.restored.load(ordering: .relaxed)
        r.restoreFailures = c.restoreFailures.load(ordering: .relaxed)
        r.restoreCorrupted = c.restoreCorrupted.load(ordering: .relaxed)
        r.lastRestoreUs = c.lastRestoreMicroseconds.load(ordering: .relaxed)
        r.meanRestoreUs = r.restored == 0 ? 0 : c.totalRestoreMicroseconds.load(ordering: .relaxed) / r.restored
        r.blocksPublished = c.published.load(ordering: .relaxed)
        r.blocksPublishFailures = c.publishFailures.load(ordering: .relaxed) + c.publishDropped.load(ordering: .relaxed)
        r.blocksImported = c.imported.load(ordering: .relaxed)
        r.blocksRejected = c.importRejected.load(ordering: .relaxed)
        let (count, bytes) = tier.queued
        r.queued = UInt32(clamping: count)
        r.queuedBytes = UInt64(bytes)
        return r
    }

    static func memory(_ store: TenantStore) -> Kvd_V1_MemoryStats {
        let settings = store.memory
        let c = store.space.counters
        var m = Kvd_V1_MemoryStats()
        m.high = settings.high
        m.low = settings.low
        m.reservationsAborted = c.reservationsAborted.load(ordering: .relaxed)
        m.reservationsAbortedPages = c.reservationsAbortedPages.load(ordering: .relaxed)
        m.orphansReleased = c.orphansReleased.load(ordering: .relaxed)
        m.orphansReleasedPages = c.orphansReleasedPages.load(ordering: .relaxed)
        m.compactions = c.compactions.load(ordering: .relaxed)
        m.compactionsPages = c.compactionsPages.load(ordering: .relaxed)
        m.evictions = c.evictions.load(ordering: .relaxed)
        m.evictionsPages = c.evictionsPages.load(ordering: .relaxed)
        m.reclaimPasses = c.reclaimPasses.load(ordering: .relaxed)
        m.synchronousReclaims = c.synchronousReclaims.load(ordering: .relaxed)
        m.lastReclaimUs = c.lastReclaimMicroseconds.load(ordering: .relaxed)
        m.lastReclaimReachedLow = c.lastReclaimReachedLow.load(ordering: .relaxed)
        let lease = UInt64(settings.leaseSeconds * 1e9)
        let now = DispatchTime.now().uptimeNanoseconds
        let lastSeen = lease > 0 ? store.shared.connections.snapshot() : [:]
        for e in store.space.allEntries {
            if lease > 0, e.lease.expiry(lease: lease, lastSeen: lastSeen) < now { m.orphans += 1 }
            if e.lease.pinned.load(ordering: .relaxed) {
                m.pinnedSequences += 1
                m.pinnedPages += UInt32(clamping: e.lease.pages.load(ordering: .relaxed))
            }
        }
        m.eventsPublished = c.eventsPublished.load(ordering: .relaxed)
        m.windowFreedPages = c.windowFreedPages.load(ordering: .relaxed)
        m.windowReturnedPages = c.windowReturnedPages.load(ordering: .relaxed)
        return m
    }

    static func handle(_ r: Kvd_V1_StatsRequest, _ entry: SequenceState, _ store: TenantStore) -> Kvd_V1_StatsResponse {
        var out = arena(store)
        // The dispatcher touched the sequence for this very request: idle_ms is the time before it.
        out.sequence = sequence(entry, store, lastTouch: entry.lease.previousAccess.load(ordering: .relaxed))
        return out
    }

    /// One sequence's figures; `lastTouch` is when a request last named it (uptime ns). On its queue.
    static func sequence(_ entry: SequenceState, _ store: TenantStore, lastTouch: UInt64) -> Kvd_V1_SequenceStats {
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
        let lease = entry.lease
        let now = DispatchTime.now().uptimeNanoseconds
        s.idleMs = (now &- min(now, lastTouch)) / 1_000_000
        let leaseNs = UInt64(store.memory.leaseSeconds * 1e9)
        if leaseNs > 0 {
            let expiry = lease.expiry(lease: leaseNs, lastSeen: store.shared.connections.snapshot())
            s.leaseRemainingMs = (Int64(bitPattern: expiry) &- Int64(bitPattern: now)) / 1_000_000
            s.orphan = expiry < now
        }
        s.pinned = lease.pinned.load(ordering: .relaxed)
        s.bytes = UInt64(seq.pageCount) &* UInt64(store.arena.sizing.pageBytes)
        s.managerCompactions = lease.managerCompactions.load(ordering: .relaxed)
        s.lastMethod = entry.lastMethod
        return s
    }
}
