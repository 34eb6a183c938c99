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
        public init() {}
    }

    public struct Arena: Sendable, Equatable {
        public var shmName: String = "/kvd-default"
        public var sizeBytes: Int = 256 << 20
        public var stagingBytes: Int = 32 << 20
        public init() {}
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

    public var server = Server()
    public var arena = Arena()
    public var models: [ModelLayout] = []
    public var logLevel: LogLevel = .info
    public var policies: [Policy] = []
    public var rules: [Rule] = []
    /// Absolute directories whose *.so C-ABI plugins are loaded at start-up.
    public var pluginDirectories: [String] = []
    /// Directory of the config file; relative paths in policy parameters are resolved against it.
    public var baseDirectory: String = "."

    public init() {}

    /// Endpoints' ipc socket files, removed on shutdown.
    public var ipcPaths: [String] {
        server.endpoints.compactMap { $0.hasPrefix("ipc://") ? String($0.dropFirst(6)) : nil }
    }
}
