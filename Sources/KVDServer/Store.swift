import Dispatch
import KVDConfig
import KVDCore
import KVDPluginAPI
import KVDPluginHost
import KVDShm
import Synchronization

/// Everything the handlers share: the arena, its page and staging allocators, the live sequences,
/// the compaction methods and the counters Stats reports.
final class Store: Sendable {
    let config: Configuration
    let arena: Arena
    let pages: PageAllocator
    let staging: RangeAllocator
    /// Policies and methods; replaced whole on SIGHUP.
    private let book: Mutex<PolicyBook>
    let models: [String: ModelLayout]
    let workers = DispatchQueue(label: "kvd.workers", attributes: .concurrent)

    private struct Table {
        var entries: [UInt64: SequenceEntry] = [:]
        var lastAssigned: UInt64 = 0
    }
    private let table = Mutex(Table())

    let requests = Atomic<UInt64>(0)
    let errors = Atomic<UInt64>(0)

    init(config: Configuration, arena: Arena, policies: PolicyBook) {
        self.config = config
        self.arena = arena
        book = Mutex(policies)
        pages = PageAllocator(pageCount: arena.sizing.pageCount)
        staging = RangeAllocator(capacity: arena.sizing.stagingBytes)
        models = Dictionary(uniqueKeysWithValues: config.models.map { ($0.name, $0) })
    }

    var policies: PolicyBook { book.withLock { $0 } }

    /// Swaps in a newly compiled policy book (SIGHUP); sequences are untouched.
    func replacePolicies(_ new: PolicyBook) { book.withLock { $0 = new } }

    /// Fraction of arena pages in use, for rules.
    var arenaUsed: Double { pages.pageCount == 0 ? 0 : Double(pages.usedCount) / Double(pages.pageCount) }

    var sequenceCount: Int { table.withLock { $0.entries.count } }

    func model(named name: String) throws(KVDError) -> ModelLayout {
        guard let m = models[name] else {
            throw .notFound("unknown model '\(name)'; configured models: \(models.keys.sorted().joined(separator: ", "))")
        }
        return m
    }

    /// Creates a sequence with `requested` id, or the next free one when `requested` is 0.
    func create(model: ModelLayout, requested: UInt64, tenant: String) throws(KVDError) -> SequenceEntry {
        let result: Result<SequenceEntry, KVDError> = table.withLock { t in
            guard t.entries.count < config.server.maxSequences else {
                return .failure(.resourceExhausted(
                    "\(t.entries.count) sequences are alive, the limit server.max_sequences is \(config.server.maxSequences); release some"))
            }
            var id = requested
            if id == 0 {
                repeat { t.lastAssigned &+= 1 } while t.lastAssigned == 0 || t.entries[t.lastAssigned] != nil
                id = t.lastAssigned
            } else if t.entries[id] != nil {
                return .failure(.alreadyExists("sequence \(id) already exists; pick another id or pass 0 to let kvd choose"))
            }
            let entry = SequenceEntry(sequence: KVSequence(id: SequenceID(id), layout: model, tenant: tenant), target: workers)
            t.entries[id] = entry
            return .success(entry)
        }
        return try result.get()
    }

    func entry(_ id: UInt64) throws(KVDError) -> SequenceEntry {
        guard id != 0 else { throw .invalidArgument("sequence_id must be set (non-zero)") }
        guard let e = table.withLock({ $0.entries[id] }) else {
            throw .notFound("sequence \(id) not found; it was never created or has been released")
        }
        return e
    }

    func remove(_ id: UInt64) {
        _ = table.withLock { $0.entries.removeValue(forKey: id) }
    }
}
