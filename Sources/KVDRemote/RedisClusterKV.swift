/// `RemoteKV` on a Redis Cluster of masters (replicas are not used).
///
/// Routing: a key goes to the master of its slot (`ClusterKeySlot`) in a slot map read with
/// `CLUSTER SLOTS` from the first node that answers (known masters first, then the seeds). The map is
/// read on first use, and again — at most once per `minRefreshIntervalMs` — after a `MOVED` and after
/// a node fails to answer.
/// - `MOVED slot node`: the slot has a new owner. The map takes it at once (and is refreshed, since a
///   reshard usually moves more than one slot), and the command is sent again to that node.
/// - `ASK slot node`: the slot is being migrated and this key is on the target already (or is new).
///   `ASKING` then the command go to that node, once; the map does not change.
/// - After `maxRedirections` redirections the call fails with `unavailable`.
/// - A node that does not answer: the map is refreshed from another node; if the slot's owner changed
///   (a replica was promoted) the command is sent to the new owner, else the call fails with
///   `unavailable`. Without replicas that slot stays unavailable until the node is back; the other
///   nodes' slots keep working.
///
/// Ownership: not Sendable; belongs to the one thread or serial queue that calls it. A call blocks for
/// at most (redirections + 1) × (connect + command timeout) plus, when a refresh runs, one connect +
/// command timeout per node asked.
public final class RedisClusterKV: RemoteKV {
    public struct Options: Sendable {
        public let timeouts: RedisTimeouts
        /// Redirections (`MOVED`, `ASK`, a retry on a new owner) one call may follow.
        public let maxRedirections: Int
        /// Minimum time between two reads of the slot map, so a node that is down or a burst of
        /// `MOVED` replies does not turn every call into a `CLUSTER SLOTS` on every node.
        public let minRefreshIntervalMs: Int

        public init(timeouts: RedisTimeouts = RedisTimeouts(), maxRedirections: Int = 5, minRefreshIntervalMs: Int = 100) {
            precondition(maxRedirections >= 0 && minRefreshIntervalMs >= 0)
            self.timeouts = timeouts
            self.maxRedirections = maxRedirections
            self.minRefreshIntervalMs = minRefreshIntervalMs
        }
    }

    /// What routing did, for metrics and tests.
    public struct Counters: Sendable, Equatable {
        public var moved = 0
        public var asked = 0
        /// Slot map reads that succeeded.
        public var refreshes = 0

        public init(moved: Int = 0, asked: Int = 0, refreshes: Int = 0) {
            self.moved = moved
            self.asked = asked
            self.refreshes = refreshes
        }
    }

    public let seeds: [RedisEndpoint]
    public let options: Options
    public private(set) var counters = Counters()

    private var map = ClusterSlotMap()
    private var connections: [RedisEndpoint: RedisConnection] = [:]
    private let clock = ContinuousClock()
    private var lastRefresh: ContinuousClock.Instant?
    /// Why the last slot map read failed, for the error of a call that finds no map.
    private var lastRefreshError: RemoteError?

    /// Connects to nothing yet: the first call reads the slot map from `seeds`.
    public init(seeds: [RedisEndpoint], options: Options = Options()) {
        precondition(!seeds.isEmpty, "a Redis Cluster client needs at least one seed node")
        self.seeds = seeds
        self.options = options
    }

    /// The master the slot map names for `slot` now (nil before the first call or when unknown).
    public func owner(ofSlot slot: Int) -> RedisEndpoint? {
        precondition((0..<ClusterKeySlot.count).contains(slot))
        return map.owner(of: slot)
    }

    /// Reads the slot map now, whatever the rate limit (for a startup check of the configuration).
    public func refreshSlotMap() throws(RemoteError) {
        try refresh(avoiding: nil)
    }

    // MARK: - RemoteKV

    public func get(_ key: [UInt8]) throws(RemoteError) -> [UInt8]? {
        let args = KVCommand.get(key)
        let (reply, node) = try send(args, key: key)
        return try KVCommand.value(reply, node, args)
    }

    public func get(_ key: [UInt8], into sink: ValueSink) throws(RemoteError) -> Int? {
        let args = KVCommand.get(key)
        let (reply, node) = try send(args, key: key, into: sink)
        return try KVCommand.sunk(reply, node, args)
    }

    public func set(_ key: [UInt8], _ value: [UInt8], ttlSeconds: Int) throws(RemoteError) {
        let args = KVCommand.set(key, value, ttlSeconds: ttlSeconds)
        let (reply, node) = try send(args, key: key)
        try KVCommand.ok(reply, node, args)
    }

    /// One `UNLINK` per slot (a cluster refuses a multi-key command across slots). Not atomic: when one
    /// slot's node fails, the keys of the slots before it are already deleted.
    public func delete(_ keys: [[UInt8]]) throws(RemoteError) -> Int {
        var order: [Int] = []
        var bySlot: [Int: [[UInt8]]] = [:]
        for key in keys {
            let slot = ClusterKeySlot.of(key)
            if bySlot[slot] == nil { order.append(slot) }
            bySlot[slot, default: []].append(key)
        }
        var total = 0
        for slot in order {
            let group = bySlot[slot]!
            let args = KVCommand.delete(group)
            let (reply, node) = try send(args, key: group[0])
            total += try KVCommand.count(reply, node, args)  // at most keys.count: cannot overflow
        }
        return total
    }

    public func exists(_ key: [UInt8]) throws(RemoteError) -> Bool {
        let args = KVCommand.exists(key)
        let (reply, node) = try send(args, key: key)
        return try KVCommand.count(reply, node, args) > 0
    }

    // MARK: - Routing

    private enum Redirect {
        case moved(slot: Int, to: RedisEndpoint)
        case ask(slot: Int, to: RedisEndpoint)
    }

    /// Sends `args` (whose keys all hash like `key`) to the slot's master, following redirections.
    /// Returns the final reply (any error reply but a redirection is returned, for the caller to
    /// read) and the node that gave it.
    private func send(_ args: [[UInt8]], key: [UInt8], into sink: ValueSink? = nil) throws(RemoteError) -> (RedisReply, RedisEndpoint) {
        let slot = ClusterKeySlot.of(key)
        var target = try master(of: slot, args)
        var asking = false
        var redirections = 0
        while true {
            let reply: RedisReply
            do throws(RemoteError) {
                reply = try sendOnce(args, to: target, asking: asking, into: sink)
            } catch let error where error.kind == .unavailable && !asking {
                // The node is down or unreachable. If the cluster has moved the slot elsewhere (a
                // replica promoted, a reshard) the refreshed map says so; otherwise the slot is down.
                refreshIfDue(avoiding: target)
                guard let owner = map.owner(of: slot), owner != target, redirections < options.maxRedirections else { throw error }
                redirections += 1
                target = owner
                continue
            }
            guard let redirect = try redirect(in: reply, from: target, args) else { return (reply, target) }
            guard redirections < options.maxRedirections else {
                throw RemoteError.at(.unavailable, target, args, "still redirected after \(redirections) redirections (last: \(reply.summary)): the cluster's slots are moving or its nodes disagree")
            }
            redirections += 1
            switch redirect {
            case .moved(let movedSlot, let node):
                counters.moved += 1
                // Refresh first, then take the MOVED: the node that answers CLUSTER SLOTS may not have
                // heard of the move yet, and the MOVED comes from the slot's previous owner.
                refreshIfDue(avoiding: nil)
                map.assign(movedSlot, to: node)
                target = node
                asking = false
            case .ask(_, let node):
                counters.asked += 1
                target = node
                asking = true
            }
        }
    }

    /// One command on `node`, preceded by `ASKING` after an `ASK` redirection (which lets the
    /// importing node serve a slot it does not own yet, for this one command).
    private func sendOnce(_ args: [[UInt8]], to node: RedisEndpoint, asking: Bool, into sink: ValueSink?) throws(RemoteError) -> RedisReply {
        let connection = self.connection(to: node)
        if asking {
            let askingArgs = [Array("ASKING".utf8)]
            let reply = try connection.command(askingArgs)
            guard reply == .status("OK") else { throw KVCommand.unexpected(reply, "+OK", node, askingArgs) }
        }
        return try connection.command(args, into: sink)
    }

    /// `MOVED <slot> <host:port>` or `ASK <slot> <host:port>`; nil for any other reply. An empty host
    /// means the host of the node that replied.
    private func redirect(in reply: RedisReply, from node: RedisEndpoint, _ args: [[UInt8]]) throws(RemoteError) -> Redirect? {
        guard case .error(let text) = reply, let code = reply.errorCode, code == "MOVED" || code == "ASK" else { return nil }
        let parts = text.split(separator: " ")
        guard parts.count == 3, let slot = Int(parts[1]), (0..<ClusterKeySlot.count).contains(slot),
              let to = RedisEndpoint(parsing: String(parts[2]), defaultHost: node.host)
        else { throw RemoteError.at(.protocol, node, args, "malformed redirection '\(text.prefix(200))'") }
        return code == "MOVED" ? .moved(slot: slot, to: to) : .ask(slot: slot, to: to)
    }

    /// The slot's master from the map, reading the map first if there is none yet.
    private func master(of slot: Int, _ args: [[UInt8]]) throws(RemoteError) -> RedisEndpoint {
        if let node = map.owner(of: slot) { return node }
        refreshIfDue(avoiding: nil)
        if let node = map.owner(of: slot) { return node }
        if map.isEmpty, let why = lastRefreshError { throw why }
        throw RemoteError(.unavailable, "slot \(slot): no master serves it in the cluster's slot map (\(map.coveredSlots) of 16384 slots covered); \(RemoteError.commandName(args)) not sent")
    }

    // MARK: - Slot map

    /// Refreshes the map unless the last refresh was less than `minRefreshIntervalMs` ago. A failure
    /// is kept for the next error message, not thrown: the caller has its own error to report.
    private func refreshIfDue(avoiding avoided: RedisEndpoint?) {
        if let last = lastRefresh, clock.now < last.advanced(by: .milliseconds(options.minRefreshIntervalMs)) { return }
        try? refresh(avoiding: avoided)
    }

    /// Reads `CLUSTER SLOTS` from the first node that answers: the known masters, then the seeds,
    /// and `avoided` (the node that just failed) only when there is no one else to ask.
    private func refresh(avoiding avoided: RedisEndpoint?) throws(RemoteError) {
        lastRefresh = clock.now
        var candidates: [RedisEndpoint] = []
        for node in map.nodes + seeds where node != avoided && !candidates.contains(node) { candidates.append(node) }
        if let avoided { candidates.append(avoided) }
        let args = [Array("CLUSTER".utf8), Array("SLOTS".utf8)]
        var failures: [RemoteError] = []
        for node in candidates {
            do throws(RemoteError) {
                let fresh = try ClusterSlotMap(parsing: connection(to: node).command(args), from: node)
                guard !fresh.isEmpty else { throw RemoteError.at(.unavailable, node, args, "no slots assigned (cluster not created yet?)") }
                map = fresh
                counters.refreshes += 1
                lastRefreshError = nil
                dropUnusedConnections()
                return
            } catch {
                failures.append(error)
            }
        }
        // `protocol` only when every node answered with nonsense: then waiting will not help.
        let kind: RemoteError.Kind = failures.allSatisfy { $0.kind == .protocol } ? .protocol : .unavailable
        let error = RemoteError(kind, "no node gave a slot map: " + failures.map(\.message).joined(separator: "; "))
        lastRefreshError = error
        throw error
    }

    private func connection(to node: RedisEndpoint) -> RedisConnection {
        if let c = connections[node] { return c }
        let c = RedisConnection(endpoint: node, timeouts: options.timeouts)
        connections[node] = c
        return c
    }

    /// Closes connections to nodes that are neither masters in the map nor seeds, so nodes removed
    /// from the cluster do not keep sockets open.
    private func dropUnusedConnections() {
        let keep = Set(map.nodes + seeds)
        for node in connections.keys where !keep.contains(node) { connections[node] = nil }
    }
}

@available(*, unavailable)
extension RedisClusterKV: Sendable {}
