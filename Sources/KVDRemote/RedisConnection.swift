/// One blocking connection to one Redis node.
///
/// Ownership: not Sendable. A connection belongs to the one thread or serial queue that created it
/// (in kvd, the owner of the `RemoteKV` that holds it); every call blocks that thread for at most the
/// timeouts. Do not call it from Swift concurrency's cooperative pool: a blocked node would hold one
/// of its few threads for a whole timeout.
///
/// Connects lazily, on the first command. After an I/O error, a timeout or a protocol error, hiredis'
/// context is unusable: it is freed at once and a new one is made on the next command, so a node that
/// restarted is used again without anyone calling "reconnect". The command that failed is not
/// retried here (it may have run on the server); the caller decides.
public final class RedisConnection {
    public let endpoint: RedisEndpoint
    public let timeouts: RedisTimeouts
    private var context: Hiredis.Context?

    public init(endpoint: RedisEndpoint, timeouts: RedisTimeouts = RedisTimeouts()) {
        self.endpoint = endpoint
        self.timeouts = timeouts
    }

    deinit { close() }

    /// Whether a context is open now (false before the first command and after a failure).
    public var isConnected: Bool { context != nil }

    /// Sends `args` (the command name then its arguments, each any bytes) and returns the reply.
    /// An error reply (`-ERR …`, `-MOVED …`) is returned as `.error`, not thrown: whether it is a
    /// failure is the caller's call. Throws `unavailable` when the node cannot be reached or does not
    /// answer in time, `protocol` for a malformed reply.
    /// With a `sink`, a bulk-string reply goes into it and comes back as `.sunk(length)`.
    public func command(_ args: [[UInt8]], into sink: ValueSink? = nil) throws(RemoteError) -> RedisReply {
        let c = try open(args)
        do throws(Hiredis.Failure) {
            return try Hiredis.command(c, args, into: sink)
        } catch {
            // A failed read or write may leave half a reply in the socket: this context is done.
            close()
            throw RemoteError.at(error.kind, endpoint, args, error.what)
        }
    }

    /// Connects now (a command does it when needed). For a startup check of the configuration.
    public func connect() throws(RemoteError) {
        _ = try open([Array("CONNECT".utf8)])
    }

    /// Closes the socket; the next command opens a new one.
    public func close() {
        if let c = context {
            Hiredis.free(c)
            context = nil
        }
    }

    private func open(_ args: [[UInt8]]) throws(RemoteError) -> Hiredis.Context {
        if let c = context { return c }
        do throws(Hiredis.Failure) {
            let c = try Hiredis.connect(endpoint, timeouts)
            context = c
            return c
        } catch {
            throw RemoteError.at(error.kind, endpoint, args, error.what)
        }
    }
}

// A connection is used by one thread at a time (hiredis contexts are not thread-safe): say so to
// the compiler too, so passing one to another isolation domain is an error.
@available(*, unavailable)
extension RedisConnection: Sendable {}
