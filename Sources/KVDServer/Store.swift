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

    /// Random per process, in every reply's header: a client that sees it change knows the daemon
    /// restarted (docs/DURABILITY.md, "What a client sees").
    let instanceID = UInt64.random(in: 1...UInt64.max)
    let requests = Atomic<UInt64>(0)
    let errors = Atomic<UInt64>(0)

    /// The memory manager's settings; replaced whole on SIGHUP.
    private let memorySettings: Mutex<Configuration.Memory>
    /// When each connection was last heard from (leases).
    let connections = ConnectionLeases()
    /// The events endpoint, once bound (nil when memory.events_endpoint is off).
    private let publisher = Mutex<EventPublisher?>(nil)
    /// Runs the memory manager's passes one at a time, off the socket thread.
    let managerQueue = DispatchQueue(label: "kvd.memory-manager")
    private let managerNudged = Atomic<Bool>(false)
    private let managerPass = Mutex<(@Sendable () -> Void)?>(nil)

    /// Loads new policies and memory settings from the config file (SIGHUP and the Reload request;
    /// nil where there is no file, as in the fuzz harness). The lock also keeps two reloads from
    /// interleaving.
    let reloader = Mutex<(@Sendable () throws -> (PolicyBook, Configuration.Memory))?>(nil)

    /// For the memory manager's messages (nil in the fuzz harness).
    let logger: Logger?

    /// The remote tier (remote.enabled), or nil.
    let remote: RemoteTier?
    /// What /metrics exports (metrics.enabled), or nil: then nothing is counted or timed for it.
    let metrics: ServerMetrics?
    /// Prompt blocks are shared with other daemons through the remote tier.
    var sharesPrefixes: Bool { remote?.settings.sharePrefixes ?? false }

    init(
        config: Configuration, spaces: [TenantSpace], policies: PolicyBook, logger: Logger? = nil, remote: RemoteTier? = nil,
        metrics: ServerMetrics? = nil
    ) {
        self.config = config
        self.metrics = metrics
        self.logger = logger
        self.remote = remote
        self.spaces = spaces
        openSpace = spaces.first { $0.tenant.token == nil && $0.tenant.curvePublicKeys.isEmpty }
        book = Mutex(policies)
        models = Dictionary(uniqueKeysWithValues: config.models.map { ($0.name, $0) })
        memorySettings = Mutex(config.memory)
    }

    /// One open tenant and no admin token: nobody authenticates, so everyone who reaches the
    /// socket may also operate the daemon (docs/SECURITY.md, "Admin credential").
    var hasNoCredentials: Bool { spaces.count == 1 && openSpace != nil && !config.admin.isConfigured }

    var policies: PolicyBook { book.withLock { $0 } }
    var memory: Configuration.Memory { memorySettings.withLock { $0 } }

    /// Swaps in a newly compiled policy book (SIGHUP); sequences are untouched.
    func replacePolicies(_ new: PolicyBook) { book.withLock { $0 = new } }

    /// Swaps in new memory-manager settings (SIGHUP); the events endpoint stays as bound.
    func replaceMemorySettings(_ new: Configuration.Memory) { memorySettings.withLock { $0 = new } }

    var events: EventPublisher? { publisher.withLock { $0 } }
    func setEvents(_ p: EventPublisher?) { publisher.withLock { $0 = p } }

    /// Installs the memory manager's pass (`nudge` runs it soon).
    func setManagerPass(_ pass: (@Sendable () -> Void)?) { managerPass.withLock { $0 = pass } }

    /// Asks the memory manager for a pass now rather than at its next tick (e.g. usage just crossed
    /// memory.high). Coalesced: at most one extra pass is queued.
    func nudgeManager() {
        guard !managerNudged.exchange(true, ordering: .acquiringAndReleasing) else { return }
        managerQueue.async { [self] in
            managerNudged.store(false, ordering: .releasing)
            managerPass.withLock { $0 }?()
        }
    }

    func space(named name: String) -> TenantSpace? { spaces.first { $0.name == name } }

    var sequenceCount: Int { liveSequences.withLock { $0 } }

    func model(named name: String) throws(KVDError) -> ModelLayout {
        guard let m = models[name] else {
            throw .notFound("unknown model '\(name)'; configured models: \(models.keys.sorted().joined(separator: ", "))")
        }
        return m
    }

    /// Creates a sequence in `space`, within the tenant's quota and server.max_sequences.
    func create(
        in space: TenantSpace, requested: UInt64, owner: UInt64, now: UInt64, pinned: Bool,
        make: (SequenceID) throws(KVDError) -> (KVSequence, PrefixTracker?)
    ) throws(KVDError) -> SequenceEntry {
        let limit = config.server.maxSequences
        // The server-wide count is taken under its own lock inside the tenant's table lock (always in
        // that order), so two tenants cannot both take the last slot.
        return try space.create(requested: requested, target: workers, owner: owner, now: now, pinned: pinned, make: make, admit: {
            liveSequences.withLock { n in
                guard n < limit else {
                    return .resourceExhausted("\(n) sequences are alive, the limit server.max_sequences is \(limit); release some")
                }
                n += 1
                return nil
            }
        })
    }

    /// Sequences a restart brought back count against server.max_sequences like created ones (they
    /// may exceed it when the limit was lowered; then no new one is admitted until enough go).
    func countRestored(_ n: Int) { liveSequences.withLock { $0 += n } }

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
    /// The connection may send admin requests (set by the dispatcher for Hello and admin kinds).
    var isAdmin = false
    /// Its number in `ConnectionLeases` (owners are recorded by number); 0 for the manager itself.
    var connectionNumber: UInt64 = 0
    /// When the request arrived (uptime ns).
    var now: UInt64 = 0
    /// False on the socket thread: an Append or Reserve that does not fit then fails fast (and the
    /// dispatcher re-runs it on a worker, where it may wait for the memory manager to reclaim).
    var mayReclaim = true

    var config: Configuration { shared.config }
    var policies: PolicyBook { shared.policies }
    var arena: Arena { space.arena }
    var pages: PageAllocator { space.pages }
    var staging: RangeAllocator { space.staging }
    /// This tenant's page use, for rules such as arena_used_above.
    var arenaUsed: Double { space.arenaUsed }

    func model(named name: String) throws(KVDError) -> ModelLayout { try shared.model(named: name) }
    func create(
        requested: UInt64, pinned: Bool, make: (SequenceID) throws(KVDError) -> (KVSequence, PrefixTracker?)
    ) throws(KVDError) -> SequenceEntry {
        try shared.create(in: space, requested: requested, owner: connectionNumber, now: now, pinned: pinned, make: make)
    }
    var memory: Configuration.Memory { shared.memory }
    func entry(_ id: UInt64) throws(KVDError) -> SequenceEntry { try space.entry(id) }
    func remove(id: UInt64) { shared.remove(id: id, from: space) }
}
