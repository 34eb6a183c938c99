/// A Redis node's address. `host` is passed to hiredis as is: an IP address, or a name that the
/// system resolver looks up (that lookup is not bounded by the connect timeout, so configure IPs).
public struct RedisEndpoint: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `"host:port"` (the form of config files, `MOVED`/`ASK` replies and `redis-cli`); the port is
    /// after the last colon so an IPv6 address keeps its colons. Nil when the port is not 1...65535
    /// or the host is empty and no `defaultHost` is given (Redis sends `":port"` for "the host you
    /// are talking to" when a node does not know its own address).
    public init?(parsing text: String, defaultHost: String? = nil) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty {
            guard let defaultHost else { return nil }
            host = defaultHost
        }
        guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// How long a call may wait. Every network wait of this layer is bounded by one of these, so a dead or
/// stopped node costs at most a timeout, never a hang.
public struct RedisTimeouts: Sendable, Equatable {
    /// TCP connect (hiredis' `redisConnectWithTimeout`).
    public let connectMs: Int
    /// Each blocking send and each blocking receive of a command (`redisSetTimeout`, i.e.
    /// SO_SNDTIMEO/SO_RCVTIMEO): the limit applies per socket call, so a reply that keeps trickling
    /// in can take longer in total; a node that stops answering costs one `commandMs`.
    public let commandMs: Int

    public init(connectMs: Int = 500, commandMs: Int = 2000) {
        precondition(connectMs > 0 && commandMs > 0, "Redis timeouts must be positive (0 would mean wait forever)")
        self.connectMs = connectMs
        self.commandMs = commandMs
    }
}
