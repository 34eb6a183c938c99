/// `RemoteKV` on one Redis node (not in cluster mode) over one connection.
///
/// Ownership: not Sendable; belongs to the one thread or serial queue that calls it (see `RemoteKV`).
/// A call blocks for at most one connect timeout plus the command timeout. After a failure the next
/// call reconnects (see `RedisConnection`), so a restarted node is picked up by itself.
public final class RedisNodeKV: RemoteKV {
    public let connection: RedisConnection

    public init(endpoint: RedisEndpoint, timeouts: RedisTimeouts = RedisTimeouts()) {
        connection = RedisConnection(endpoint: endpoint, timeouts: timeouts)
    }

    public func get(_ key: [UInt8]) throws(RemoteError) -> [UInt8]? {
        let args = KVCommand.get(key)
        return try KVCommand.value(connection.command(args), connection.endpoint, args)
    }

    public func get(_ key: [UInt8], into sink: ValueSink) throws(RemoteError) -> Int? {
        let args = KVCommand.get(key)
        return try KVCommand.sunk(connection.command(args, into: sink), connection.endpoint, args)
    }

    public func set(_ key: [UInt8], _ value: [UInt8], ttlSeconds: Int) throws(RemoteError) {
        let args = KVCommand.set(key, value, ttlSeconds: ttlSeconds)
        try KVCommand.ok(connection.command(args), connection.endpoint, args)
    }

    public func delete(_ keys: [[UInt8]]) throws(RemoteError) -> Int {
        if keys.isEmpty { return 0 }
        let args = KVCommand.delete(keys)
        return try KVCommand.count(connection.command(args), connection.endpoint, args)
    }

    public func exists(_ key: [UInt8]) throws(RemoteError) -> Bool {
        let args = KVCommand.exists(key)
        return try KVCommand.count(connection.command(args), connection.endpoint, args) > 0
    }
}

@available(*, unavailable)
extension RedisNodeKV: Sendable {}
