/// The key-value operations kvd needs from the Redis tier: store evicted sequences and shared prefix
/// blocks, read them back, drop them. Keys and values are arbitrary bytes.
///
/// Implementations (`RedisNodeKV`, `RedisClusterKV`) are synchronous, bounded by their timeouts and
/// not Sendable: one instance belongs to one thread or serial queue, which every call blocks for at
/// most the timeouts (a few of them for a cluster call that is redirected or meets a dead node).
public protocol RemoteKV: AnyObject {
    /// The value stored under `key`, or nil when there is none (never stored, expired, evicted).
    func get(_ key: [UInt8]) throws(RemoteError) -> [UInt8]?
    /// The value under `key` read into `sink`'s memory as it arrives (see `ValueSink`) instead of an
    /// array: its length, or nil when there is none.
    func get(_ key: [UInt8], into sink: ValueSink) throws(RemoteError) -> Int?
    /// Stores `value` under `key`, replacing what was there. `ttlSeconds` > 0 lets Redis drop it after
    /// that long (`SET key value EX ttl`); 0 keeps it until it is deleted or evicted.
    func set(_ key: [UInt8], _ value: [UInt8], ttlSeconds: Int) throws(RemoteError)
    /// Deletes `keys` and returns how many existed.
    func delete(_ keys: [[UInt8]]) throws(RemoteError) -> Int
    /// Whether `key` exists, without transferring its value.
    func exists(_ key: [UInt8]) throws(RemoteError) -> Bool
}

/// Where a value's bytes go while they come off the socket, so they land where they are needed
/// (a restore: straight into the pages) instead of in an array first. Only a bulk-string reply goes
/// to a sink.
///
/// `begin(length:)` starts the value (again, after a cluster call was redirected or retried: the
/// sink forgets what it had). Then, until `length` bytes have landed: `next(limit:)` gives
/// destinations for the next bytes (in order, at most `limit` bytes in all, at least one), the
/// socket is read into them, and `landed(_:)` says how many bytes arrived (filling them in order).
/// A value hiredis read (a small one) is copied in the same way once it is whole.
public protocol ValueSink: AnyObject {
    func begin(length: Int)
    func next(limit: Int) -> [UnsafeMutableRawBufferPointer]
    func landed(_ count: Int)
}

extension ValueSink {
    /// `bytes` into the sink's destinations: for bytes already read.
    func copy(_ bytes: UnsafeRawBufferPointer) {
        var at = 0
        while at < bytes.count {
            var n = 0
            for d in next(limit: bytes.count - at) {
                let take = min(d.count, bytes.count - at - n)
                d.baseAddress!.copyMemory(from: bytes.baseAddress! + at + n, byteCount: take)
                n += take
            }
            landed(n)
            at += n
        }
    }
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

    /// GET into a sink: the length of the bulk string that went into it, or nil for a missing key.
    static func sunk(_ reply: RedisReply, _ node: RedisEndpoint, _ args: [[UInt8]]) throws(RemoteError) -> Int? {
        switch reply {
        case .sunk(let n): return n
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
