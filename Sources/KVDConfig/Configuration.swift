import KVDCore

/// Everything `kvd --config FILE` reads. Every key, its type, default and meaning is defined once, in
/// `ConfigSchema.swift`; `Config/kvd.yaml` lists them all with comments.
public struct Configuration: Sendable, Equatable {
    public struct Server: Sendable, Equatable {
        public var endpoints: [String] = ["ipc:///tmp/kvd-default.sock"]
        public var maxMessageBytes: Int = 256 << 20
        public var maxTokensPerAppend: Int = 65536
        public var maxSequences: Int = 4096
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

    public var server = Server()
    public var arena = Arena()
    public var models: [ModelLayout] = []
    public var logLevel: LogLevel = .info

    public init() {}

    /// Endpoints' ipc socket files, removed on shutdown.
    public var ipcPaths: [String] {
        server.endpoints.compactMap { $0.hasPrefix("ipc://") ? String($0.dropFirst(6)) : nil }
    }
}
