import CHiredis
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The only file in kvd that calls hiredis (0.14 synchronous API: `redisConnectWithTimeout`,
/// `redisSetTimeout`, `redisGetReply` and its reader, `freeReplyObject`, `redisFree`). Each function wraps one
/// call and turns hiredis' error state into a `Failure` that says what failed and what to check;
/// `RedisConnection` adds the node and the command.
enum Hiredis {
    typealias Context = UnsafeMutablePointer<redisContext>

    struct Failure: Error {
        let kind: RemoteError.Kind
        let what: String
    }

    /// `redisConnectWithTimeout` then `redisSetTimeout`: a blocking context whose connect is bounded by
    /// `connectMs` and whose every later send/receive is bounded by `commandMs`.
    static func connect(_ node: RedisEndpoint, _ timeouts: RedisTimeouts) throws(Failure) -> Context {
        guard let port = Int32(exactly: node.port), (1...65535).contains(port) else {
            throw Failure(kind: .unavailable, what: "bad port \(node.port)")
        }
        guard let c = redisConnectWithTimeout(node.host, port, timeval(ms: timeouts.connectMs)) else {
            throw Failure(kind: .unavailable, what: "redisConnectWithTimeout: out of memory")
        }
        if c.pointee.err != 0 {
            let text = errorText(c)
            redisFree(c)
            throw Failure(kind: .unavailable, what: "connect failed: \(text) (is redis-server running there and reachable within \(timeouts.connectMs) ms?)")
        }
        if redisSetTimeout(c, timeval(ms: timeouts.commandMs)) != REDIS_OK {
            let text = errorText(c)
            redisFree(c)
            throw Failure(kind: .unavailable, what: "redisSetTimeout(\(timeouts.commandMs) ms) failed: \(text)")
        }
        return c
    }

    /// `redisFree`: closes the socket and frees the context.
    static func free(_ c: Context) { redisFree(c) }

    /// Sends `args` (binary-safe: every argument goes with its length) and returns a copy of the reply.
    /// The bytes go through `RESPWire`, which spares a large value hiredis' copies; hiredis parses
    /// every reply but a large bulk string. A thrown failure leaves the context unusable (hiredis'
    /// rule after any I/O or protocol error): the caller must free it.
    static func command(_ c: Context, _ args: [[UInt8]], into sink: ValueSink? = nil) throws(Failure) -> RedisReply {
        precondition(!args.isEmpty, "a Redis command needs at least its name")
        try RESPWire.send(fd: c.pointee.fd, args)
        switch try RESPWire.receive(c, into: sink) {
        case .bulk(let bytes):
            return .string(bytes)
        case .sunk(let length):
            return .sunk(length)
        case .hiredis(let raw):
            defer { freeReplyObject(raw) }
            let reply = try copy(raw.assumingMemoryBound(to: redisReply.self), depth: 0)
            if let sink, case .string(let bytes) = reply {
                sink.begin(length: bytes.count)
                bytes.withUnsafeBytes { sink.copy($0) }
                return .sunk(bytes.count)
            }
            return reply
        }
    }

    // MARK: - Replies

    /// hiredis 0.14 nests at most 7 levels; anything deeper is not from hiredis, and the recursion
    /// below must stay bounded anyway.
    private static let maxDepth = 16

    /// A `RedisReply` copied out of hiredis' memory. Every length and count is checked before use
    /// (they come from the network through hiredis' parser): a size that does not fit, a missing
    /// buffer or element, or an unknown type is a `protocol` failure, never a trap.
    private static func copy(_ r: UnsafePointer<redisReply>, depth: Int) throws(Failure) -> RedisReply {
        guard depth <= maxDepth else { throw Failure(kind: .protocol, what: "reply nested deeper than \(maxDepth) levels") }
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_INTEGER:
            return .int(Int64(reply.integer))
        case REDIS_REPLY_STRING:
            return .string(try bytes(reply))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: try bytes(reply), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: try bytes(reply), as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            guard let n = Int(exactly: reply.elements) else {
                throw Failure(kind: .protocol, what: "array of \(reply.elements) elements does not fit in memory")
            }
            if n == 0 { return .array([]) }
            guard let elements = reply.element else {
                throw Failure(kind: .protocol, what: "array of \(n) elements without an element vector")
            }
            var out: [RedisReply] = []
            out.reserveCapacity(n)
            for i in 0..<n {
                guard let e = elements[i] else { throw Failure(kind: .protocol, what: "array element \(i) of \(n) is missing") }
                out.append(try copy(e, depth: depth + 1))
            }
            return .array(out)
        default:
            throw Failure(kind: .protocol, what: "unknown reply type \(reply.type)")
        }
    }

    /// The `len` bytes at `str` (string, status and error replies).
    private static func bytes(_ reply: redisReply) throws(Failure) -> [UInt8] {
        guard let n = Int(exactly: reply.len) else {
            throw Failure(kind: .protocol, what: "reply of \(reply.len) bytes does not fit in memory")
        }
        if n == 0 { return [] }
        guard let str = reply.str else { throw Failure(kind: .protocol, what: "reply of \(n) bytes without a buffer") }
        return Array(UnsafeRawBufferPointer(start: str, count: n))
    }

    // MARK: - Errors

    /// What the context's `err`/`errstr` say after a failed call, as a failure with a hint.
    static func contextFailure(_ c: Context, errno saved: Int32) -> Failure {
        let text = errorText(c)
        switch c.pointee.err {
        case REDIS_ERR_PROTOCOL:
            return Failure(kind: .protocol, what: "protocol error: \(text) (is this a Redis server?)")
        case REDIS_ERR_EOF:
            return Failure(kind: .unavailable, what: "connection closed by the server (\(text)): the node crashed, restarted or dropped the client")
        case REDIS_ERR_IO where saved == EAGAIN || saved == EWOULDBLOCK:
            return Failure(kind: .unavailable, what: "no reply within the command timeout: the node is stopped, overloaded or unreachable")
        case REDIS_ERR_OOM:
            // Usually a declared size no allocation can hold (`*1000000000000`): not worth a retry.
            return Failure(kind: .protocol, what: "hiredis could not allocate the reply (a huge declared size, or out of memory): \(text)")
        default:
            return Failure(kind: .unavailable, what: "I/O error: \(text)")
        }
    }

    /// `errstr` (a NUL-terminated `char[128]` inside the context), read without trusting the NUL.
    static func errorText(_ c: Context) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            let end = raw.firstIndex(of: 0) ?? raw.count
            let text = String(decoding: raw[..<end], as: UTF8.self)
            return text.isEmpty ? "unknown error" : text
        }
    }
}

extension timeval {
    init(ms: Int) {
        self.init(tv_sec: ms / 1000, tv_usec: .init((ms % 1000) * 1000))
    }
}
