import Dispatch
import KVDConfig
import KVDCore
import KVDShm
import Synchronization

/// One tenant's world: its own shared-memory segment (handed only to connections bound to this
/// tenant), that segment's page and staging allocators, and its sequences. Nothing in here is
/// reachable from another tenant's requests: the dispatcher resolves a request's tenant first and
/// looks sequences up only in that tenant's table, so another tenant's ids are simply unknown.
final class TenantSpace: Sendable {
    let tenant: Configuration.Tenant
    let arena: Arena
    let pages: PageAllocator
    let staging: RangeAllocator
    /// Sequences the memory manager took back (their ids answer EVICTED).
    let evictions = EvictionLog()
    /// What the memory manager did here.
    let counters = ManagerCounters()
    /// What the remote tier did for this tenant.
    let remoteCounters = RemoteCounters()
    /// Bytes of window queries kept for pressure compaction (memory.keep_queries_bytes bounds it).
    let keptQueryBytes = Atomic<Int>(0)
    /// Cached prompt blocks of this tenant (prefix reuse).
    let prefix: TenantPrefix
    /// Reclaim passes in this segment run one at a time (the manager's and those an Append waits for).
    let reclaimQueue: DispatchQueue
    /// Crash safety: the segment's journal, nil when durability is off.
    let journal: SegmentJournal?

    private struct Table {
        var entries: [UInt64: SequenceEntry] = [:]
    }
    private let table = Mutex(Table())

    var name: String { tenant.name }

    init(tenant: Configuration.Tenant, arena: Arena, prefix: Configuration.Prefix = .init(), models: [ModelLayout] = [],
         journal: SegmentJournal? = nil, prefixKey: [UInt8]? = nil) {
        self.tenant = tenant
        self.arena = arena
        self.journal = journal
        let pages = PageAllocator(
            pageCount: arena.sizing.pageCount, quota: tenant.maxPages,
            quotaName: "tenant '\(tenant.name)' page quota (quotas.pages)")
        self.pages = pages
        self.prefix = TenantPrefix(config: prefix, tenant: tenant.name, models: models, pages: pages, journal: journal, key: prefixKey)
        staging = RangeAllocator(capacity: arena.sizing.stagingBytes)
        reclaimQueue = DispatchQueue(label: "kvd.reclaim.\(tenant.name)")
    }

    /// Every live sequence, for a memory-manager pass.
    var allEntries: [SequenceEntry] { table.withLock { Array($0.entries.values) } }

    /// Pages held by pinned sequences.
    var pinnedPages: Int { allEntries.reduce(0) { $0 + ($1.lease.pinned.load(ordering: .relaxed) ? $1.lease.pages.load(ordering: .relaxed) : 0) } }

    /// Fraction of this tenant's pages in use (of its quota when it has one), for rules.
    var arenaUsed: Double { pages.limit == 0 ? 0 : Double(pages.usedCount) / Double(pages.limit) }

    var sequenceCount: Int { table.withLock { $0.entries.count } }

    /// Creates a sequence with `requested` id, or an unguessable one when `requested` is 0.
    /// `admit` checks and takes a slot of the server-wide limit inside the table's lock (so two
    /// creations cannot both take the last slot), after every other check; it returns the error to
    /// answer, or nil to go ahead. `make` builds the sequence for the chosen id (empty, adopted or
    /// forked) and its prefix tracker; a sequence made and then refused is released.
    func create(
        requested: UInt64, target: DispatchQueue, owner: UInt64, now: UInt64, pinned: Bool,
        make: (SequenceID) throws(KVDError) -> (KVSequence, PrefixTracker?),
        admit: () -> KVDError?
    ) throws(KVDError) -> SequenceEntry {
        let quota = tenant.maxSequences
        let name = tenant.name
        let result: Result<SequenceEntry, KVDError> = table.withLock { t in
            if quota > 0, t.entries.count >= quota {
                return .failure(.resourceExhausted(
                    "tenant '\(name)' sequence quota (quotas.sequences) of \(quota) reached; release some sequences"))
            }
            var id = requested
            if id == 0 {
                // Random, not sequential: a client cannot guess another client's ids (of its own
                // tenant; other tenants' ids are not even in this table).
                repeat { id = UInt64.random(in: 1...(UInt64(1) << 62)) } while t.entries[id] != nil
            } else if t.entries[id] != nil {
                return .failure(.alreadyExists("sequence \(id) already exists; pick another id or pass 0 to let kvd choose"))
            }
            let made: (KVSequence, PrefixTracker?)
            do throws(KVDError) { made = try make(SequenceID(id)) } catch { return .failure(error) }
            // Last, so that every refusal above leaves the server-wide count alone.
            if let refused = admit() {
                _ = made.0.release(allocator: pages)
                return .failure(refused)
            }
            // Recorded before the id is visible: no request can change the sequence meanwhile.
            journal?.put(made.0, pinned: pinned)
            let entry = SequenceEntry(
                sequence: made.0, space: self, target: target, owner: owner, now: now, pinned: pinned, prefix: made.1)
            t.entries[id] = entry
            evictions.forget(id)
            return .success(entry)
        }
        return try result.get()
    }

    func entry(_ id: UInt64) throws(KVDError) -> SequenceEntry {
        guard id != 0 else { throw .invalidArgument("sequence_id must be set (non-zero)") }
        guard let e = table.withLock({ $0.entries[id] }) else {
            if let evicted = evictions.error(for: id) { throw evicted }
            throw .notFound("sequence \(id) not found; it was never created or has been released")
        }
        return e
    }

    /// Forgets `id`; true when it was there.
    /// Adds a sequence rebuilt from the journal (a restart adopting this segment).
    func insertRestored(_ entry: SequenceEntry) {
        table.withLock { $0.entries[entry.id] = entry }
    }

    func remove(_ id: UInt64) -> Bool {
        table.withLock { $0.entries.removeValue(forKey: id) } != nil
    }
}
