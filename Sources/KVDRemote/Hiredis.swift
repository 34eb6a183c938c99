import CHiredis
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The only file in kvd that calls hiredis (0.14 synchronous API: `redisConnectWithTimeout`,
/// `redisSetTimeout`, `redisCommandArgv`, `freeReplyObject`, `redisFree`). Each function wraps one
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

    /// `redisCommandArgv` (binary-safe: every argument goes with its length) and a copy of the reply.
    /// A thrown failure leaves the context unusable (hiredis' rule after any I/O or protocol error):
    /// the caller must free it.
    static func command(_ c: Context, _ args: [[UInt8]], commandMs: Int) throws(Failure) -> RedisReply {
        precondition(!args.isEmpty, "a Redis command needs at least its name")
        guard let argc = Int32(exactly: args.count) else {
            throw Failure(kind: .rejected, what: "\(args.count) arguments is more than hiredis takes")
        }
        var savedErrno: Int32 = 0
        let raw = withSigpipeBlocked {
            withArgv(args) { argv, lens in
                let r = redisCommandArgv(c, argc, argv, lens)
                savedErrno = errno  // before anything else can overwrite it: tells a timeout apart
                return r
            }
        }
        guard let raw else { throw contextFailure(c, errno: savedErrno, commandMs: commandMs) }
        defer { freeReplyObject(raw) }
        return try copy(raw.assumingMemoryBound(to: redisReply.self), depth: 0)
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

    // MARK: - Arguments

    /// Runs `body` with `argv`/`argvlen` arrays for `redisCommandArgv`. Up to 8 non-empty arguments
    /// (every KV command: `SET key value EX ttl` is 5) are pinned in place, so an 8 MiB value is not
    /// copied once more before hiredis formats it; more arguments (a DEL of many keys) are copied
    /// into one buffer, so the nesting below stays shallow whatever the count.
    private static func withArgv<R>(
        _ args: [[UInt8]],
        _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        let lens = args.map(\.count)
        var argv = [UnsafePointer<CChar>?](repeating: nil, count: args.count)
        func run() -> R {
            argv.withUnsafeMutableBufferPointer { a in lens.withUnsafeBufferPointer { l in body(a.baseAddress!, l.baseAddress!) } }
        }
        if args.count <= 8 && !args.contains(where: \.isEmpty) {
            // Each level keeps one argument's storage alive and its address valid while `run` calls hiredis.
            func pin(_ i: Int) -> R {
                if i == args.count { return run() }
                return args[i].withUnsafeBytes { b in
                    argv[i] = b.baseAddress!.assumingMemoryBound(to: CChar.self)  // non-empty: has an address
                    return pin(i + 1)
                }
            }
            return pin(0)
        }
        var flat: [UInt8] = []
        flat.reserveCapacity(lens.reduce(1, +))
        for a in args { flat += a }
        flat.append(0)  // never empty, so the buffer has an address even when every argument is empty
        return flat.withUnsafeBytes { b in
            var offset = 0
            for i in args.indices {
                argv[i] = (b.baseAddress! + offset).assumingMemoryBound(to: CChar.self)
                offset += lens[i]
            }
            return run()
        }
    }

    // MARK: - Errors

    /// What the context's `err`/`errstr` say after a failed call, as a failure with a hint.
    private static func contextFailure(_ c: Context, errno saved: Int32, commandMs: Int) -> Failure {
        let text = errorText(c)
        switch c.pointee.err {
        case REDIS_ERR_PROTOCOL:
            return Failure(kind: .protocol, what: "protocol error: \(text) (is this a Redis server?)")
        case REDIS_ERR_EOF:
            return Failure(kind: .unavailable, what: "connection closed by the server (\(text)): the node crashed, restarted or dropped the client")
        case REDIS_ERR_IO where saved == EAGAIN || saved == EWOULDBLOCK:
            return Failure(kind: .unavailable, what: "no reply within the \(commandMs) ms command timeout: the node is stopped, overloaded or unreachable")
        case REDIS_ERR_OOM:
            // Usually a declared size no allocation can hold (`*1000000000000`): not worth a retry.
            return Failure(kind: .protocol, what: "hiredis could not allocate the reply (a huge declared size, or out of memory): \(text)")
        default:
            return Failure(kind: .unavailable, what: "I/O error: \(text)")
        }
    }

    /// `errstr` (a NUL-terminated `char[128]` inside the context), read without trusting the NUL.
    private static func errorText(_ c: Context) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            let end = raw.firstIndex(of: 0) ?? raw.count
            let text = String(decoding: raw[..<end], as: UTF8.self)
            return text.isEmpty ? "unknown error" : text
        }
    }

    // MARK: - SIGPIPE

    /// hiredis 0.14 sends with write(2), not send(MSG_NOSIGNAL): writing to a node that has closed the
    /// connection would raise SIGPIPE, whose default action kills kvd. Rather than change the whole
    /// process' disposition, block SIGPIPE on this thread for the call and discard one that the call
    /// raised (the scheme libpq uses); the write itself then fails with EPIPE, an ordinary I/O error.
    private static func withSigpipeBlocked<R>(_ body: () -> R) -> R {
        #if os(Linux)
        var pipe = sigset_t()
        sigemptyset(&pipe)
        sigaddset(&pipe, SIGPIPE)
        var old = sigset_t()
        pthread_sigmask(SIG_BLOCK, &pipe, &old)
        // Already blocked by the caller, or already pending: that SIGPIPE is not ours to discard.
        var pending = sigset_t()
        sigpending(&pending)
        let leaveAlone = sigismember(&old, SIGPIPE) == 1 || sigismember(&pending, SIGPIPE) == 1
        let result = body()
        if !leaveAlone {
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1 {
                var zero = timespec(tv_sec: 0, tv_nsec: 0)
                _ = sigtimedwait(&pipe, nil, &zero)
            }
        }
        pthread_sigmask(SIG_SETMASK, &old, nil)
        return result
        #else
        return body()
        #endif
    }
}

extension timeval {
    init(ms: Int) {
        self.init(tv_sec: ms / 1000, tv_usec: .init((ms % 1000) * 1000))
    }
}
