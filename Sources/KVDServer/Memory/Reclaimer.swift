import Dispatch
import Foundation
import KVDConfig
import KVDCore

/// One reclaim pass over one tenant's segment, cheapest loss first:
/// 1. leases: abort reservations whose owner went quiet, announce new orphans, release orphans
///    past the grace period; then, above the target, drop cached prefix blocks no sequence holds;
/// 2. when usage is above the target: compress idle sequences (orphans first, then least recently
///    used), never pinned or busy ones, never below memory.floor_tokens;
/// 3. then evict whole idle sequences in the same order;
/// 4. only for an append that needs room: compress, then evict, recently used sequences (touched
///    within memory.busy_ms but with no request running), least recently used first.
/// Passes of one segment run one at a time on its `reclaimQueue`; each action runs on the
/// sequence's own queue after claiming it, so a sequence with a request queued or running is never
/// touched (it is busy), and one touched within memory's busy window is left alone too.
enum Reclaimer {
    enum Goal {
        /// The background manager: above memory.high, bring usage to memory.low. `underPressure`:
        /// an earlier pass started that and has not reached low yet (usage may be between the two).
        case watermarks(underPressure: Bool)
        /// An Append or Reserve needs `pages` free pages (and usage under memory.low if above high).
        case room(pages: Int)
    }

    /// Runs one pass; returns pages freed. Call on `space.reclaimQueue`.
    @discardableResult
    static func pass(_ space: TenantSpace, _ store: Store, _ goal: Goal, deadline: UInt64) -> Int {
        dispatchPrecondition(condition: .onQueue(space.reclaimQueue))
        let settings = store.memory
        let now = DispatchTime.now().uptimeNanoseconds
        let entries = space.allEntries
        var freed = expireLeases(entries, store, settings, now: now)

        let limit = space.pages.limit
        let high = Int((settings.high * Double(limit)).rounded(.down))
        let low = Int((settings.low * Double(limit)).rounded(.down))
        let used = space.pages.usedCount
        let target: Int
        switch goal {
        case .watermarks(let underPressure):
            guard used > high || underPressure else { return freed }
            target = low
        case .room(let pages):
            target = used > high ? min(low, limit - pages) : limit - pages
        }
        guard used > target else { return freed }
        space.counters.reclaimPasses.add(1, ordering: .relaxed)
        let percent = Int((Double(used) * 100 / Double(max(limit, 1))).rounded())
        let why: String
        switch goal {
        case .watermarks: why = "tenant '\(space.name)' \(percent)% of \(limit) pages in use, above memory.high \(settings.high)"
        case .room(let pages): why = "tenant '\(space.name)' \(percent)% of \(limit) pages in use, and an append needed \(pages) more"
        }
        func done() -> Bool { space.pages.usedCount <= target }
        func stillNeeded() -> Int { space.pages.usedCount - target }
        // Cached prompt blocks no sequence holds cost nobody anything to drop (at most a later
        // prefill), so they go before any sequence is compressed or evicted — and again within each
        // action: a compressed or evicted sequence's indexed pages come back only once its blocks go.
        freed += space.prefix.evictUnused(limit: stillNeeded())
        if done() { return freed }

        // Candidates: not pinned, no open reservation. Orphans (lease expired) first, each group least
        // recently used first. Those touched within memory.busy_ms (a decode loop between steps)
        // are `recent`: the background manager leaves them alone; an append that needs room
        // reaches them last, after every idle sequence.
        let lease = UInt64(settings.leaseSeconds * 1e9)
        let busyNs = UInt64(settings.busyMilliseconds) * 1_000_000
        let lastSeen = store.connections.snapshot()
        let ranked = entries.filter { e in
            !e.lease.pinned.load(ordering: .relaxed) && e.lease.reservationOwner.load(ordering: .relaxed) == 0
        }.map { e in
            (entry: e, orphan: lease > 0 && e.lease.expiry(lease: lease, lastSeen: lastSeen) < now, last: e.lease.lastAccess.load(ordering: .relaxed))
        }.sorted { a, b in a.orphan != b.orphan ? a.orphan : a.last < b.last }.map(\.entry)
        let idle = ranked.filter { !isBusy($0.lease.lastAccess.load(ordering: .relaxed), now: now, window: busyNs) }
        let recent = ranked.filter { isBusy($0.lease.lastAccess.load(ordering: .relaxed), now: now, window: busyNs) }

        // A request that could not fit even if every candidate went is refused at once, without
        // compressing or evicting anything for nothing.
        if case .room(let pages) = goal {
            let reclaimable = ranked.reduce(0) { $0 + $1.lease.pages.load(ordering: .relaxed) }
            if limit - space.pages.usedCount + reclaimable < pages { return freed }
        }
        func compress(_ list: [SequenceEntry], onlyIfIdle: Bool) {
            guard !settings.compressPolicy.isEmpty else { return }
            for e in list {
                if done() || DispatchTime.now().uptimeNanoseconds > deadline { break }
                // Nothing new since the manager last compacted it: another run would drop nothing.
                if e.lease.tokens.load(ordering: .relaxed) == e.lease.tokensAfterManagerCompaction.load(ordering: .relaxed) { continue }
                freed += act(on: e) { state in
                    // Re-checked once claimed: a request may have touched it since the list was made.
                    onlyIfIdle && !stillIdle(e, busyNs) ? 0 : ManagerActions.compress(e, state, store, settings, why: why, stillNeeded: stillNeeded)
                }
            }
        }
        func evict(_ list: [SequenceEntry], onlyIfIdle: Bool) {
            guard settings.evict else { return }
            for e in list {
                if done() || DispatchTime.now().uptimeNanoseconds > deadline { break }
                freed += act(on: e) { state in
                    guard !onlyIfIdle || stillIdle(e, busyNs) else { return 0 }
                    return ManagerActions.release(
                        e, state, store, kind: .evicted, record: "evicted by the memory manager (\(why))", why: why,
                        stillNeeded: stillNeeded)
                }
            }
        }
        compress(idle, onlyIfIdle: true)
        evict(idle, onlyIfIdle: true)
        if case .room = goal {
            // Only an append that would otherwise be refused reaches recently used sequences.
            compress(recent, onlyIfIdle: false)
            evict(recent, onlyIfIdle: false)
        }
        return freed
    }

    /// Touched within `window` of `now`, or after `now` (a request stamped it after the pass read
    /// the clock: the subtraction must not wrap it into "idle for ages").
    static func isBusy(_ lastAccess: UInt64, now: UInt64, window: UInt64) -> Bool {
        lastAccess >= now || now - lastAccess < window
    }

    private static func stillIdle(_ e: SequenceEntry, _ window: UInt64) -> Bool {
        !isBusy(e.lease.lastAccess.load(ordering: .relaxed), now: DispatchTime.now().uptimeNanoseconds, window: window)
    }

    /// Runs `action` on the sequence's queue if it is idle; 0 when it is busy.
    private static func act(on e: SequenceEntry, _ action: (SequenceState) -> Int) -> Int {
        guard e.tryClaim() else { return 0 }
        defer { e.unclaim() }
        return e.sync(action)
    }

    /// Step 1 of every pass: reservations and sequences whose lease ran out.
    private static func expireLeases(_ entries: [SequenceEntry], _ store: Store, _ settings: Configuration.Memory, now: UInt64) -> Int {
        guard settings.leaseSeconds > 0 else { return 0 }
        let lease = UInt64(settings.leaseSeconds * 1e9)
        let grace = UInt64(settings.orphanGraceSeconds * 1e9)
        let lastSeen = store.connections.snapshot()
        var freed = 0
        for e in entries {
            if let r = e.lease.reservationExpiry(lease: lease, lastSeen: lastSeen), r < now {
                let quiet = seconds(now &- r &+ lease)
                freed += act(on: e) { state in
                    // Re-checked on the queue: the owner may have committed meanwhile.
                    guard let again = e.lease.reservationExpiry(lease: lease, lastSeen: store.connections.snapshot()), again < now else { return 0 }
                    return ManagerActions.abortReservation(e, state, store, why: "its owner sent nothing for \(quiet) (memory.lease_seconds \(settings.leaseSeconds))")
                }
            }
            let expiry = e.lease.expiry(lease: lease, lastSeen: lastSeen)
            guard expiry < now else { continue }
            if !e.lease.orphanAnnounced.exchange(true, ordering: .relaxed) {
                let why = "no request or KeepAlive from its owner for \(seconds(now &- expiry &+ lease))"
                ManagerActions.publish(ManagerActions.makeEvent(.leaseExpired, e, generation: 0, pages: 0, reason: why), e, store)
            }
            guard now &- expiry >= grace else { continue }
            freed += act(on: e) { state in
                guard e.lease.expiry(lease: lease, lastSeen: store.connections.snapshot()) < now else { return 0 }
                let record = "released by the memory manager: its lease expired (no request or KeepAlive from its owner for "
                    + "memory.lease_seconds \(settings.leaseSeconds)) and memory.orphan_grace_seconds \(settings.orphanGraceSeconds) passed"
                return ManagerActions.release(e, state, store, kind: .orphanReleased, record: record, why: "lease expired and the grace period ended")
            }
        }
        return freed
    }

    static func seconds(_ ns: UInt64) -> String { String(format: "%.1f s", Double(ns) / 1e9) }
}
