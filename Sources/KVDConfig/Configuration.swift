import KVDCore

/// Everything `kvd --config FILE` reads. Every key, its type, default and meaning is defined once, in
/// `ConfigSchema.swift`; `Config/kvd.yaml` lists them all with comments.
public struct Configuration: Sendable, Equatable {
    public struct Server: Sendable, Equatable {
        public var endpoints: [String] = ["ipc:///tmp/kvd-default.sock"]
        public var maxMessageBytes: Int = 256 << 20
        public var maxTokensPerAppend: Int = 65536
        public var maxSequences: Int = 4096
        /// Threads one compaction may use; 0 = every core (a daemon sharing its machine with the
        /// runtime can leave cores to it).
        public var computeThreads: Int = 0
        /// Longest a sequence may grow (tokens ever appended). Positions are int32 on the wire and
        /// in memory, so this can be at most 2^31 - 1; appends past it are refused.
        public var maxSequenceTokens: Int = Int(Int32.max)
        /// Mode of the ipc:// socket files (the socket is the door to every tenant's data).
        public var ipcMode: UInt32 = 0o600
        /// Binding a tcp:// endpoint that is not loopback without CURVE is refused unless this is set.
        public var allowInsecureTCP: Bool = false
        /// CURVE server secret key file (Z85 text, 40 characters), absolute after loading; nil = no CURVE.
        public var curveSecretKeyFile: String?
        /// Request-id de-duplication: ids remembered per connection, and how long a quiet
        /// connection's ids are kept.
        public var requestIDWindow: Int = 4096
        public var requestIDIdleSeconds: Int = 300
        /// How long SIGTERM waits for running requests before the daemon exits anyway.
        public var drainSeconds: Double = 30
        public init() {}
    }

    public struct Arena: Sendable, Equatable {
        public var shmName: String = "/kvd-default"
        public var sizeBytes: Int = 256 << 20
        public var stagingBytes: Int = 32 << 20
        /// File mode of the segment (owner only by default).
        public var mode: UInt32 = 0o600
        /// Owner and group to give the segment (needs the privilege to chown); nil = the daemon's.
        public var ownerUID: UInt32?
        public var ownerGID: UInt32?
        public init() {}
    }

    /// The memory manager: leases, watermarks, compress-before-evict (docs/MEMORY.md). Everything
    /// but `eventsEndpoint` is reloaded by SIGHUP.
    public struct Memory: Sendable, Equatable {
        /// What a connection owns (sequences, reservations) expires this long after its last request
        /// or KeepAlive; 0 = leases off (nothing expires).
        public var leaseSeconds: Double = 30
        /// An orphan (a sequence whose lease expired) is released this long after the lease ended.
        public var orphanGraceSeconds: Double = 600
        /// Above `high` (fraction of a tenant's page limit in use) the manager reclaims down to `low`.
        public var high: Double = 0.90
        public var low: Double = 0.80
        /// Policy that compresses idle sequences under pressure ("" = never compress, only evict).
        public var compressPolicy: String = "pressure"
        /// Query-free policy used when `compressPolicy` needs window queries the sequence never sent.
        public var fallbackPolicy: String = "pressure"
        /// The manager never leaves a head with fewer tokens than this (or than it had).
        public var floorTokens: Int = 64
        /// A sequence touched this recently is in use (a runtime's decode loop touches it every step):
        /// the background manager leaves it alone; an append that needs room reaches it after idle ones.
        public var busyMilliseconds: Int = 1000
        /// Evict whole least-recently-used sequences when compression is not enough.
        public var evict: Bool = true
        /// Keep the window queries each sequence last sent with Compact, up to this many bytes per
        /// tenant in all (0 = never), so pressure compaction can use a query-based policy.
        public var keepQueriesBytes: Int = 64 << 20
        /// How often the manager checks leases and watermarks.
        public var intervalMilliseconds: Int = 100
        /// Longest the one reclaim pass an Append or Reserve that does not fit runs before it tries
        /// again (and answers RESOURCE_EXHAUSTED if it still does not fit).
        public var reclaimWaitMilliseconds: Int = 500
        /// ZeroMQ PUB endpoint for manager events ("" = off). Not reloadable.
        public var eventsEndpoint: String = ""
        public init() {}
    }

    /// Who may use kvd and what they get: every sequence belongs to one tenant, and each tenant has
    /// its own shared-memory segment, handed only to connections bound to it.
    public struct Tenant: Sendable, Equatable {
        public var name: String
        /// Secret a connection gives in Hello to bind to this tenant; nil = an open tenant (no
        /// credential), which connections that never authenticate use. At most one is open.
        public var token: String?
        /// File holding the token (first line), read at load time; keeps the secret out of the config.
        public var tokenFile: String?
        /// CURVE public keys (Z85, 40 characters) of clients that belong to this tenant.
        public var curvePublicKeys: [String] = []
        /// Unix user ids allowed to bind to this tenant over ipc:// (empty = any local user that can
        /// open the socket file).
        public var unixUIDs: [UInt32] = []
        /// The tenant's own segment.
        public var arena: Arena
        /// Quotas; 0 = no quota beyond the segment's pages / server.max_sequences.
        public var maxPages: Int = 0
        public var maxSequences: Int = 0
        /// Most pages in pinned sequences (0 = no quota beyond maxPages).
        public var maxPinnedPages: Int = 0
        public var line: Int = 0
        public init(name: String, arena: Arena) {
            self.name = name
            self.arena = arena
        }
    }

    /// How a log line looks on stderr: `plain` for people, `json` (one object per line) for
    /// collectors (journald, Loki, Fluent Bit, Vector).
    public enum LogFormat: String, Sendable, CaseIterable {
        case plain, json
    }

    public enum LogLevel: String, Sendable, CaseIterable, Comparable {
        case error, warning, info, debug
        private var rank: Int { Self.allCases.firstIndex(of: self)! }
        public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rank < b.rank }
    }

    /// A named policy: a method, or a composition of stages, with parameters.
    public struct Policy: Sendable, Equatable {
        public var name: String
        /// A method name (e.g. "headkv"), or nil when composed from stages.
        public var method: String?
        /// Stage names when composed (e.g. scorer "knorm" with allocator "pyramidkv").
        public var scorer: String?
        public var allocator: String?
        /// A stop on top of the method's or scorer's ranking (e.g. "dbudgetkv").
        public var stopper: String?
        /// A layer sharer applied after compaction (e.g. "kvsharer").
        public var sharer: String?
        public var params: [NamedParam] = []
        /// Line in the config file, for error messages.
        public var line: Int = 0
        public init(name: String) { self.name = name }
    }

    public struct NamedParam: Sendable, Equatable {
        public var name: String
        public var value: ParamValue
        public init(_ name: String, _ value: ParamValue) {
            self.name = name
            self.value = value
        }
    }

    /// Picks a policy from state when a Compact request names none. Every condition set must hold.
    public struct Rule: Sendable, Equatable {
        /// Arena pages in use above this fraction (0...1).
        public var arenaUsedAbove: Double?
        /// Sequence logical length above this many tokens.
        public var lengthAbove: Int?
        /// Only sequences of this model.
        public var model: String?
        public var policy: String
        public var line: Int = 0
        public init(policy: String) { self.policy = policy }

        /// "arena_used_above 0.8, length_above 4096", for replies and logs.
        public var condition: String {
            var parts: [String] = []
            if let a = arenaUsedAbove { parts.append("arena_used_above \(a)") }
            if let l = lengthAbove { parts.append("length_above \(l)") }
            if let m = model { parts.append("model \(m)") }
            return parts.isEmpty ? "always" : parts.joined(separator: ", ")
        }
    }

    /// Prefix reuse (docs/PREFIX.md): indexing pages by token-id block hashes so a new sequence can
    /// adopt a cached prompt prefix.
    public struct Prefix: Sendable, Equatable {
        /// Off: nothing is indexed, Lookup finds nothing, adopt adopts nothing (Fork still works).
        public var enabled: Bool = true
        /// File holding the 128-bit block-hash key as 32 hex digits on its first line (absolute
        /// after loading); nil = a random key per start (hashes then mean nothing across restarts).
        public var keyFile: String?
        /// The key read from `keyFile` by `ConfigLoader.load` (16 bytes).
        public var key: [UInt8]?
        public init() {}
    }

    /// Crash safety (docs/DURABILITY.md): a journal of every committed change next to each
    /// segment, so a restarted kvd adopts the segment and serves its sequences again.
    public struct Durability: Sendable, Equatable {
        /// Off: a start replaces any segment it finds; nothing survives the process.
        public var enabled: Bool = false
        /// Where the journal and snapshot files live (absolute after loading). /dev/shm by default:
        /// the files then last exactly as long as the segments (until reboot).
        public var directory: String = "/dev/shm"
        /// The journal is folded into a new snapshot once it grows past this.
        public var checkpointBytes: Int = 64 << 20
        /// On SIGTERM/SIGINT, leave the segments and journals for the next start to adopt (a
        /// planned restart or upgrade) instead of removing them.
        public var keepOnExit: Bool = false
        /// Set by `kvd --fresh`: replace whatever segment and journal are found.
        public var fresh: Bool = false
        public init() {}
    }

    /// The remote tier (docs/REMOTE.md): sequences the memory manager evicts go to Redis instead
    /// of being dropped, and come back with a Restore request.
    public struct Remote: Sendable, Equatable {
        public enum Mode: String, Sendable { case single, cluster }
        /// Off by default: eviction drops sequences as without a remote tier.
        public var enabled: Bool = false
        public var mode: Mode = .single
        /// "host:port" of the node (single) or of seed nodes (cluster).
        public var nodes: [String] = ["127.0.0.1:6379"]
        /// Every key starts with it (several daemons or deployments can share one Redis).
        public var keyPrefix: String = "kvd:"
        /// The prefix of shared prompt blocks' keys, when it differs from `keyPrefix`: daemons that
        /// share prefixes share this one and keep their own `keyPrefix` for evicted sequences (whose
        /// ids are chosen per daemon). nil = `keyPrefix`.
        public var blockKeyPrefix: String? = nil
        public var effectiveBlockKeyPrefix: String { blockKeyPrefix ?? keyPrefix }
        /// Expiry of offloaded sequences in the store (0 = none).
        public var ttlSeconds: Int = 0
        public var connectTimeoutMilliseconds: Int = 200
        public var commandTimeoutMilliseconds: Int = 1000
        /// Offload evicted sequences.
        public var offloadEvicted: Bool = true
        /// A policy an evicted sequence is compacted with before it is shipped (compress, then
        /// ship): fewer bytes to Redis and back. "" = ship as held. As memory.compress_policy: a
        /// query-based policy uses the queries the sequence's last Compact sent.
        public var offloadPolicy: String = ""
        /// Publish cached prompt blocks, and look a prompt up there on a local miss, so daemons
        /// sharing this Redis share prefixes. Needs `prefix.key_file` (the same file everywhere).
        public var sharePrefixes: Bool = false
        /// Bytes of offloads waiting to be shipped at once; past it an eviction drops the sequence.
        public var queueBytes: Int = 256 << 20
        public init() {}
    }

    /// The Prometheus endpoint (docs/METRICS.md): GET /metrics over HTTP, off unless configured.
    public struct Metrics: Sendable, Equatable {
        /// Off by default: a daemon opens no HTTP port it was not asked for (and tests running many
        /// daemons at once never collide on one). Config/kvd.yaml turns it on.
        public var enabled: Bool = false
        /// An IPv4 or IPv6 literal; loopback unless the scraper runs on another machine.
        public var host: String = "127.0.0.1"
        /// 0 = any free port (the bound one is logged at info level).
        public var port: Int = 9464
        public init() {}
        /// "127.0.0.1:9464", "[::1]:9464".
        public var listen: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public var server = Server()
    public var metrics = Metrics()
    public var arena = Arena()
    public var memory = Memory()
    public var prefix = Prefix()
    public var durability = Durability()
    public var remote = Remote()
    public var models: [ModelLayout] = []
    public var logLevel: LogLevel = .info
    public var logFormat: LogFormat = .plain
    public var policies: [Policy] = []
    public var rules: [Rule] = []
    /// Absolute directories whose *.so C-ABI plugins are loaded at start-up.
    public var pluginDirectories: [String] = []
    /// Directory of the config file; relative paths in policy parameters are resolved against it.
    public var baseDirectory: String = "."
    /// Directories (absolute after loading) that file parameters of requests may name files in;
    /// default: the config file's directory.
    public var fileDirectories: [String] = []
    /// The tenants; without a `tenants:` section, one open tenant "default" using `arena`.
    public var tenants: [Tenant] = []
    /// The admin credential (`admin:`), if any.
    public var admin = Admin()

    /// The tenants as configured, or the implicit open "default" tenant on `arena`.
    public var effectiveTenants: [Tenant] {
        tenants.isEmpty ? [Tenant(name: "default", arena: arena)] : tenants
    }

    public init() {}

    /// Endpoints' ipc socket files, removed on shutdown.
    public var ipcPaths: [String] {
        server.endpoints.compactMap { $0.hasPrefix("ipc://") ? String($0.dropFirst(6)) : nil }
    }
}
