import Foundation
import KVDConfig
import KVDCore
import KVDPluginHost
import KVDProtocol

/// The memory manager's four actions on one sequence. Each runs on the sequence's queue, which the
/// caller has claimed (`SequenceEntry.tryClaim`), so no request for the sequence is queued or
/// running; each re-checks what it acts on, counts what it freed and publishes an event.
enum ManagerActions {
    /// Aborts the open reservation (its owner's lease expired). Returns pages freed.
    static func abortReservation(_ e: SequenceEntry, _ state: SequenceState, _ store: Store, why: String) -> Int {
        let seq = state.sequence
        guard let r = seq.reservation else { return 0 }
        let pages = r.newPages.reduce(0) { $0 + $1.count }
        do { try seq.abort(r.id, allocator: e.space.pages) } catch { return 0 }
        state.reservationOwner = nil
        state.reservationConnection = 0
        e.refreshGauges(state)
        let c = e.space.counters
        ManagerCounters.add(c.reservationsAborted, c.reservationsAbortedPages, freed: pages)
        publish(.reservationAborted, e, seq, store, pages: pages, reason: why)
        return pages
    }

    /// Releases the whole sequence and records why, so its id answers EVICTED. Returns pages freed.
    /// `stillNeeded`: pages the pass still wants afterwards, taken from prefix blocks no sequence
    /// holds any more (the ones this release just left to the index among them).
    static func release(
        _ e: SequenceEntry, _ state: SequenceState, _ store: Store, kind: Kvd_V1_Event.Kind, record: String, why: String,
        stillNeeded: () -> Int = { 0 }
    ) -> Int {
        let seq = state.sequence
        guard !seq.isReleased else { return 0 }
        e.space.journal?.record(.release(id: e.id))  // before the pages can go to anyone else
        // An evicted sequence's K/V is copied out for the remote tier before its pages go.
        var offloaded = false
        if kind == .evicted, let remote = store.remote, remote.settings.offloadEvicted, seq.tokensHeld > 0 {
            compactBeforeOffload(remote.settings.offloadPolicy, e, state, store)
            let blob = SequenceBlob.encode(capturing: seq, memory: e.space.arena.pageMemory, reusing: remote.spareBuffer())
            // Recorded before the blob is queued: a shipment that fails at once (Redis down) must
            // find this record to overwrite with "lost", not be overwritten by it afterwards.
            e.space.evictions.record(e.id, record, offloaded: true)
            offloaded = remote.offload(e.space, id: e.id, blob: blob)
        }
        var freed = seq.release(allocator: e.space.pages)
        freed += e.space.prefix.evictUnused(limit: stillNeeded())
        if let s = state.staging {
            e.space.staging.free(s)
            state.staging = nil
        }
        state.keepObservation(nil, in: e.space, budget: 0)
        if !offloaded { e.space.evictions.record(e.id, record) }
        store.remove(id: e.id, from: e.space)
        e.refreshGauges(state)
        let c = e.space.counters
        if kind == .evicted {
            ManagerCounters.add(c.evictions, c.evictionsPages, freed: freed)
        } else {
            ManagerCounters.add(c.orphansReleased, c.orphansReleasedPages, freed: freed)
        }
        publish(kind, e, seq, store, pages: freed, reason: why)
        return freed
    }

    /// remote.offload_policy: compress, then ship. The sequence's release is already journaled, so
    /// the compaction is not; a plan that cannot run leaves the sequence to be shipped as it is.
    private static func compactBeforeOffload(_ policy: String, _ e: SequenceEntry, _ state: SequenceState, _ store: Store) {
        guard !policy.isEmpty else { return }
        var settings = store.memory
        settings.compressPolicy = policy
        settings.fallbackPolicy = policy
        let scoped = TenantStore(shared: store, space: e.space, connection: [])
        guard let (choice, observation) = PressurePolicy.choose(store.policies, settings, state, scoped) else { return }
        do {
            _ = try CompactionJob.run(choice, state, scoped, observation: observation, journaled: false)
        } catch {
            store.logger?.debug("remote tier: not compacting sequence \(e.id) before offload: \(error.message)")
        }
    }

    /// Compacts with the pressure policy (or its query-free fallback), never below the floor.
    /// Returns pages freed; 0 when no policy fits or the plan would cross the floor (the sequence is
    /// then left for eviction until it grows).
    /// `stillNeeded` as for `release`: a compacted head's old pages may be held by the index too.
    static func compress(
        _ e: SequenceEntry, _ state: SequenceState, _ store: Store, _ settings: Configuration.Memory, why: String,
        stillNeeded: () -> Int = { 0 }
    ) -> Int {
        let seq = state.sequence
        guard !seq.isReleased, seq.reservation == nil else { return 0 }
        let before = seq.tokensHeld
        defer { e.lease.tokensAfterManagerCompaction.store(seq.tokensHeld, ordering: .relaxed) }
        let scoped = TenantStore(shared: store, space: e.space, connection: [])
        guard let (choice, observation) = PressurePolicy.choose(store.policies, settings, state, scoped) else { return 0 }
        let job: CompactionJob.Result
        do {
            // Copy-on-write makes compacting a head with shared pages take fresh pages; a plan
            // that would give back nothing net (a fork holds the same pages) is not worth running.
            job = try CompactionJob.run(choice, state, scoped, observation: observation, floor: settings.floorTokens) { planned throws(KVDError) in
                let change = seq.compactionPageChanges(plan: planned.plan, allocator: e.space.pages, copyOnly: e.space.journal != nil)
                let gain = e.space.prefix.returnedOnRelease(change.released) - change.fresh
                if gain <= 0 { throw .failedPrecondition("the plan would give back \(gain) pages net (its pages are shared)") }
            }
        } catch {
            store.logger?.debug("memory manager: not compacting sequence \(e.id): \(error.message)")
            return 0
        }
        e.refreshGauges(state)
        // Net: fresh pages taken for copy-on-write count against what was released.
        let freed = job.outcome.pagesFreed - job.outcome.pagesAllocated + e.space.prefix.evictUnused(limit: stillNeeded())
        e.lease.managerCompactions.add(1, ordering: .relaxed)
        let c = e.space.counters
        ManagerCounters.add(c.compactions, c.compactionsPages, freed: freed)
        var event = makeEvent(.compacted, e, generation: seq.generation, pages: freed, reason: why)
        event.method = choice.policy.isEmpty ? choice.method.descriptor.name : "\(choice.policy) (\(choice.method.descriptor.name))"
        event.tokensBefore = UInt64(before)
        event.tokensAfter = UInt64(seq.tokensHeld)
        publish(event, e, store)
        return freed
    }

    static func publish(_ kind: Kvd_V1_Event.Kind, _ e: SequenceEntry, _ seq: KVSequence, _ store: Store, pages: Int, reason: String) {
        publish(makeEvent(kind, e, generation: seq.generation, pages: pages, reason: reason), e, store)
    }

    /// Hands `event` to the events endpoint (if configured) and counts it for `e`'s tenant.
    /// Every manager action ends here: it is logged at info whether or not events are published.
    static func publish(_ event: Kvd_V1_Event, _ e: SequenceEntry, _ store: Store) {
        store.logger?.info("memory manager: \(event.kind) sequence \(e.id)", [
            "tenant": e.space.name, "sequence": e.id, "action": "\(event.kind)", "pages_freed": event.pagesFreed,
            "reason": event.reason,
        ])
        guard let events = store.events else { return }
        events.publish(event)
        e.space.counters.eventsPublished.add(1, ordering: .relaxed)
    }

    /// An event about `e`; `generation` 0 when the caller is not on the sequence's queue.
    static func makeEvent(_ kind: Kvd_V1_Event.Kind, _ e: SequenceEntry, generation: UInt64, pages: Int, reason: String) -> Kvd_V1_Event {
        var ev = Kvd_V1_Event()
        ev.kind = kind
        ev.tenant = e.space.name
        ev.sequenceID = e.id
        ev.generation = generation
        ev.pagesFreed = UInt32(clamping: pages)
        ev.bytesFreed = UInt64(max(0, pages)) &* UInt64(e.space.arena.sizing.pageBytes)
        ev.reason = reason
        ev.usedPages = UInt32(clamping: e.space.pages.usedCount)
        ev.limitPages = UInt32(clamping: e.space.pages.limit)
        return ev
    }
}
