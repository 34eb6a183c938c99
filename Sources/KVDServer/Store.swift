import Dispatch
import KVDConfig
import KVDCore
import KVDPluginAPI
import KVDPluginHost
import KVDShm
import Synchronization

/// What every tenant shares: the configuration, models, compaction methods, the worker pool and
/// the counters Stats reports. Each tenant's memory and sequences are in its `TenantSpace`;
/// handlers see one tenant at a time through a `TenantStore`.
final class Store: Sendable {
    let config: Configuration
    let spaces: [TenantSpace]
    /// The tenant connections use without authenticating, if the config has one.
    let openSpace: TenantSpace?
    /// Policies and methods; replaced whole on SIGHUP.
    private let book: Mutex<PolicyBook>
    let models: [String: ModelLayout]
    let workers = DispatchQueue(label: "kvd.workers", attributes: .concurrent)
    /// Sequences alive in all tenants, against server.max_sequences.
    private let liveSequences = Mutex(0)

    let requests = Atomic<UInt64>(0)
    let errors = Atomic<UInt64>(0)

    init(config: Configuration, spaces: [TenantSpace], policies: PolicyBook) {
        self.config = config
        self.spaces = spaces
        openSpace = spaces.first { $0.tenant.token == nil && $0.tenant.curvePublicKeys.isEmpty }
        book = Mutex(policies)
        models = Dictionary(uniqueKeysWithValues: config.models.map { ($0.name, $0) })
    }

    var policies: PolicyBook { book.withLock { $0 } }

    /// Swaps in a newly compiled policy book (SIGHUP); sequences are untouched.
    func replacePolicies(_ new: PolicyBook) { book.withLock { $0 = new } }

    func space(named name: String) -> TenantSpace? { spaces.first { $0.name == name } }

    var sequenceCount: Int { liveSequences.withLock { $0 } }

    func model(named name: String) throws(KVDError) -> ModelLayout {
        guard let m = models[name] else {
            throw .notFound("unknown model '\(name)'; configured models: \(models.keys.sorted().joined(separator: ", "))")
        }
        return m
    }

    /// Creates a sequence in `space`, within the tenant's quota and server.max_sequences.
    func create(in space: TenantSpace, model: ModelLayout, requested: UInt64, label: String) throws(KVDError) -> SequenceEntry {
        let limit = config.server.maxSequences
        // The server-wide count is taken under its own lock inside the tenant's table lock (always in
        // that order), so two tenants cannot both take the last slot.
        return try space.create(model: model, requested: requested, label: label, target: workers, admit: {
            liveSequences.withLock { n in
                guard n < limit else {
                    return .resourceExhausted("\(n) sequences are alive, the limit server.max_sequences is \(limit); release some")
                }
                n += 1
                return nil
            }
        })
    }

    func remove(id: UInt64, from space: TenantSpace) {
        if space.remove(id) { liveSequences.withLock { $0 -= 1 } }
    }
}

/// The store as one request sees it: shared parts plus the calling connection's tenant only.
/// Handlers take this, so they cannot reach another tenant's segment or sequences.
struct TenantStore: Sendable {
    let shared: Store
    let space: TenantSpace
    /// Routing identity of the calling connection (reservations belong to it).
    let connection: [UInt8]

    var config: Configuration { shared.config }
    var policies: PolicyBook { shared.policies }
    var arena: Arena { space.arena }
    var pages: PageAllocator { space.pages }
    var staging: RangeAllocator { space.staging }
    /// This tenant's page use, for rules such as arena_used_above.
    var arenaUsed: Double { space.arenaUsed }

    func model(named name: String) throws(KVDError) -> ModelLayout { try shared.model(named: name) }
    func create(model: ModelLayout, requested: UInt64, label: String) throws(KVDError) -> SequenceEntry {
        try shared.create(in: space, model: model, requested: requested, label: label)
    }
    func entry(_ id: UInt64) throws(KVDError) -> SequenceEntry { try space.entry(id) }
    func remove(id: UInt64) { shared.remove(id: id, from: space) }
}
