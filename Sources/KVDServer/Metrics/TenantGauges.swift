import Dispatch
import Prometheus
import Synchronization

/// One tenant's figures at scrape time, read only from what is already safe to read from any
/// thread — the same snapshots the Stats request reads: the page and staging allocators (their own
/// locks), the sequence table (its lock), lease atomics, and the manager's and remote tier's
/// counters (atomics). No sequence's state is touched, so no sequence queue is needed.
final class TenantGauges: Sendable {
    private struct Series {
        let pagesUsed, pagesFree, pageLimit, pageBytes, stagingUsed, stagingFree: Gauge
        let sequences, pinnedSequences, pinnedPages, orphans, lastReclaim: Gauge
        var manager: [Followed<ManagerCounters>]
        var remote: [Followed<RemoteCounters>]
    }

    let space: TenantSpace
    private let series: Mutex<Series>

    init(space: TenantSpace, registry r: PrometheusCollectorRegistry) {
        self.space = space
        let t = ("tenant", space.name)
        func gauge(_ name: String, _ help: String, _ extra: [(String, String)] = []) -> Gauge {
            r.gauge(name, labels: [t] + extra, help: help)
        }
        func counter<Source>(
            _ name: String, _ help: String, _ extra: [(String, String)] = [], _ read: @escaping @Sendable (Source) -> UInt64
        ) -> Followed<Source> {
            Followed(counter: MirroredCounter(r.counter(name, labels: [t] + extra, help: help)), read: read)
        }
        let pagesHelp = "Pages of the tenant's shared-memory segment, in use (held by a sequence or the prefix index) or free."
        let stagingHelp = "Bytes of the tenant's staging area (inline appends in flight), in use or free."
        let actionHelp = "Memory-manager actions on the tenant's sequences (compress, evict, reservation_abort, orphan_release)."
        let freedHelp = "Pages the memory manager's actions gave back to the tenant's segment, by action."
        // Exported with the remote tier off too (all 0), so dashboards and alerts need no special case.
        let offloadHelp = "Sequences the memory manager offloaded to the remote tier, by outcome (ok, failed, dropped)."
        let restoreHelp = "Restore requests served from the remote tier, by outcome (ok, failed, corrupted)."
        let remote: [Followed<RemoteCounters>] = [
            counter("kvd_remote_offloads_total", offloadHelp, [("outcome", "ok")]) { $0.offloaded.load(ordering: .relaxed) },
            counter("kvd_remote_offloads_total", offloadHelp, [("outcome", "failed")]) { $0.offloadFailures.load(ordering: .relaxed) },
            counter("kvd_remote_offloads_total", offloadHelp, [("outcome", "dropped")]) { $0.offloadDropped.load(ordering: .relaxed) },
            counter("kvd_remote_offloaded_bytes_total", "Bytes of sequences shipped to the remote tier.") { $0.offloadedBytes.load(ordering: .relaxed) },
            counter("kvd_remote_restores_total", restoreHelp, [("outcome", "ok")]) { $0.restored.load(ordering: .relaxed) },
            counter("kvd_remote_restores_total", restoreHelp, [("outcome", "failed")]) { $0.restoreFailures.load(ordering: .relaxed) },
            counter("kvd_remote_restores_total", restoreHelp, [("outcome", "corrupted")]) { $0.restoreCorrupted.load(ordering: .relaxed) },
        ]
        series = Mutex(Series(
            pagesUsed: gauge("kvd_arena_pages", pagesHelp, [("state", "used")]),
            pagesFree: gauge("kvd_arena_pages", pagesHelp, [("state", "free")]),
            pageLimit: gauge("kvd_arena_page_limit", "Pages the tenant may use: its page quota, or every page of its segment."),
            pageBytes: gauge("kvd_arena_page_bytes", "Bytes of one page of the tenant's segment."),
            stagingUsed: gauge("kvd_staging_bytes", stagingHelp, [("state", "used")]),
            stagingFree: gauge("kvd_staging_bytes", stagingHelp, [("state", "free")]),
            sequences: gauge("kvd_sequences", "Live sequences of the tenant."),
            pinnedSequences: gauge("kvd_pinned_sequences", "Pinned sequences of the tenant (never compressed or evicted)."),
            pinnedPages: gauge("kvd_pinned_pages", "Pages held by the tenant's pinned sequences."),
            orphans: gauge("kvd_orphan_sequences", "Sequences of the tenant whose lease expired (released after memory.orphan_grace_seconds)."),
            lastReclaim: gauge("kvd_memory_last_reclaim_seconds", "Duration of the memory manager's last reclaim pass over the tenant's segment."),
            manager: [
                counter("kvd_memory_actions_total", actionHelp, [("action", "compress")]) { $0.compactions.load(ordering: .relaxed) },
                counter("kvd_memory_freed_pages_total", freedHelp, [("action", "compress")]) { $0.compactionsPages.load(ordering: .relaxed) },
                counter("kvd_memory_actions_total", actionHelp, [("action", "evict")]) { $0.evictions.load(ordering: .relaxed) },
                counter("kvd_memory_freed_pages_total", freedHelp, [("action", "evict")]) { $0.evictionsPages.load(ordering: .relaxed) },
                counter("kvd_memory_actions_total", actionHelp, [("action", "reservation_abort")]) { $0.reservationsAborted.load(ordering: .relaxed) },
                counter("kvd_memory_freed_pages_total", freedHelp, [("action", "reservation_abort")]) {
                    $0.reservationsAbortedPages.load(ordering: .relaxed)
                },
                counter("kvd_memory_actions_total", actionHelp, [("action", "orphan_release")]) { $0.orphansReleased.load(ordering: .relaxed) },
                counter("kvd_memory_freed_pages_total", freedHelp, [("action", "orphan_release")]) { $0.orphansReleasedPages.load(ordering: .relaxed) },
                counter("kvd_memory_reclaim_passes_total", "Reclaim passes over the tenant's segment (background and synchronous).") {
                    $0.reclaimPasses.load(ordering: .relaxed)
                },
                counter("kvd_memory_synchronous_reclaims_total", "Reclaim passes an Append or Reserve that did not fit waited for.") {
                    $0.synchronousReclaims.load(ordering: .relaxed)
                },
                counter("kvd_window_freed_pages_total", "Pages sliding-window layers dropped because their tokens fell out of the window.") {
                    $0.windowFreedPages.load(ordering: .relaxed)
                },
                counter("kvd_memory_events_published_total", "Memory events about the tenant's sequences handed to the events endpoint.") {
                    $0.eventsPublished.load(ordering: .relaxed)
                },
            ],
            remote: remote))
    }

    /// Reads the tenant's figures into its series; called for each scrape.
    func refresh(leaseNs: UInt64, lastSeen: [UInt64: UInt64], now: UInt64) {
        let pages = space.pages
        let staging = space.staging
        let used = Double(pages.usedCount)
        let stagingUsed = staging.usedBytes
        var pinned = 0
        var pinnedPages = 0
        var orphans = 0
        let entries = space.allEntries
        for e in entries {
            if leaseNs > 0, e.lease.expiry(lease: leaseNs, lastSeen: lastSeen) < now { orphans += 1 }
            if e.lease.pinned.load(ordering: .relaxed) {
                pinned += 1
                pinnedPages += e.lease.pages.load(ordering: .relaxed)
            }
        }
        let c = space.counters
        let remote = space.remoteCounters
        series.withLock { s in
            s.pagesUsed.set(used)
            s.pagesFree.set(Double(pages.pageCount) - used)
            s.pageLimit.set(Double(pages.limit))
            s.pageBytes.set(Double(space.arena.sizing.pageBytes))
            s.stagingUsed.set(Double(stagingUsed))
            s.stagingFree.set(Double(staging.capacity - stagingUsed))
            s.sequences.set(Double(entries.count))
            s.pinnedSequences.set(Double(pinned))
            s.pinnedPages.set(Double(pinnedPages))
            s.orphans.set(Double(orphans))
            s.lastReclaim.set(Double(c.lastReclaimMicroseconds.load(ordering: .relaxed)) / 1e6)
            for i in s.manager.indices { s.manager[i].update(from: c) }
            for i in s.remote.indices { s.remote[i].update(from: remote) }
        }
    }
}

/// A mirrored counter and how to read its source.
private struct Followed<Source> {
    var counter: MirroredCounter
    let read: @Sendable (Source) -> UInt64

    mutating func update(from source: Source) { counter.follow(read(source)) }
}
