/// The key-value operations kvd needs from the Redis tier: store evicted sequences and shared prefix
/// blocks, read them back, drop them. Keys and values are arbitrary bytes.
///
/// Implementations (`RedisNodeKV`, `RedisClusterKV`) are synchronous, bounded by their timeouts and
/// not Sendable: one instance belongs to one thread or serial queue, which every call blocks for at
/// most the timeouts (a few of them for a cluster call that is redirected or meets a dead node).
public protocol RemoteKV: AnyObject {
    /// The value stored under `key`, or nil when there is none (never stored, expired, evicted).
    /// `observing` sees the value's bytes while they arrive (see `ValueObserver`).
    func get(_ key: [UInt8], observing: ValueObserver?) throws(RemoteError) -> [UInt8]?
    /// Stores `value` under `key`, replacing what was there. `ttlSeconds` > 0 lets Redis drop it after
    /// that long (`SET key value EX ttl`); 0 keeps it until it is deleted or evicted.
    func set(_ key: [UInt8], _ value: [UInt8], ttlSeconds: Int) throws(RemoteError)
    /// Deletes `keys` and returns how many existed.
    func delete(_ keys: [[UInt8]]) throws(RemoteError) -> Int
    /// Whether `key` exists, without transferring its value.
    func exists(_ key: [UInt8]) throws(RemoteError) -> Bool
}

/// Sees a value's bytes while they come off the socket, so a caller can work on each piece while it
/// is in cache (the remote tier checksums a blob this way). Called with consecutive pieces, `offset`
/// being where the piece starts in the value; a piece at offset 0 starts the value over (a cluster
/// call that was redirected). A value hiredis read comes as one piece at the end. Only a bulk-string
/// reply is observed; the value `get` returns is the same bytes.
public typealias ValueObserver = (_ offset: Int, _ bytes: UnsafeRawBufferPointer) -> Void

extension RemoteKV {
    public func get(_ key: [UInt8]) throws(RemoteError) -> [UInt8]? { try get(key, observing: nil) }
}

/// The commands behind `RemoteKV` and how their replies are read; shared by both implementations so
/// a node and a cluster answer the same way.
enum KVCommand {
    static func get(_ key: [UInt8]) -> [[UInt8]] { [Array("GET".utf8), key] }

    static func set(_ key: [UInt8], _ value: [UInt8], ttlSeconds: Int) -> [[UInt8]] {
        precondition(ttlSeconds >= 0, "ttlSeconds must be 0 (no expiry) or positive")
        var args = [Array("SET".utf8), key, value]
        if ttlSeconds > 0 { args += [Array("EX".utf8), Array(String(ttlSeconds).utf8)] }
        return args
    }

    /// UNLINK, not DEL: Redis frees a multi-megabyte value in a background thread instead of while
    /// the next command (often the next restore's GET) waits. Same reply as DEL (Redis ≥ 4).
    static func delete(_ keys: [[UInt8]]) -> [[UInt8]] { [Array("UNLINK".utf8)] + keys }

    static func exists(_ key: [UInt8]) -> [[UInt8]] { [Array("EXISTS".utf8), key] }

    /// GET: a bulk string, or nil for a missing key.
    static func value(_ reply: RedisReply, _ node: RedisEndpoint, _ args: [[UInt8]]) throws(RemoteError) -> [UInt8]? {
        switch reply {
        case .string(let bytes): return bytes
        case .null: return nil
        default: throw unexpected(reply, "a bulk string or nil", node, args)
        }
    }

    /// SET: `+OK`.
    static func ok(_ reply: RedisReply, _ node: RedisEndpoint, _ args: [[UInt8]]) throws(RemoteError) {
        guard reply == .status("OK") else { throw unexpected(reply, "+OK", node, args) }
    }

    /// DEL, EXISTS: a count, which cannot be negative.
    static func count(_ reply: RedisReply, _ node: RedisEndpoint, _ args: [[UInt8]]) throws(RemoteError) -> Int {
        guard case .int(let n) = reply, n >= 0, let count = Int(exactly: n) else {
            throw unexpected(reply, "a non-negative integer", node, args)
        }
        return count
    }

    /// An error reply becomes `rejected`, except the ones that say the server cannot serve right now
    /// (retrying later may work): those are `unavailable`, like a node that does not answer.
    /// Anything else that is not what the command returns is `protocol`.
    static func unexpected(_ reply: RedisReply, _ expected: String, _ node: RedisEndpoint, _ args: [[UInt8]]) -> RemoteError {
        guard case .error(let text) = reply else {
            return RemoteError.at(.protocol, node, args, "expected \(expected), got \(reply.summary)")
        }
        let message = String(text.prefix(200))
        switch reply.errorCode ?? "" {
        case "CLUSTERDOWN", "TRYAGAIN", "LOADING", "MASTERDOWN", "BUSY":
            return RemoteError.at(.unavailable, node, args, message)
        case "MOVED", "ASK":
            return RemoteError.at(.rejected, node, args, "\(message) (the node is in cluster mode: use RedisClusterKV)")
        default:
            return RemoteError.at(.rejected, node, args, message)
        }
    }
}
