import Foundation
import KVDConfig
import KVDCore
import KVDPluginAPI
import KVDPluginHost
import KVDShm
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's request path without the socket: the real `Store`, `Dispatcher` and `Outbox` over a
/// real (small) shared-memory arena, driven one frame at a time from the caller's thread. The fuzz
/// target (`Fuzz/kvd-fuzz`) uses it so that every input goes through exactly the code a received
/// frame goes through — decoding, envelope checks, cheap requests inline, the rest on sequence
/// queues with the reply coming back through the outbox — without ZeroMQ's latency per request.
///
/// Not thread-safe: one caller thread plays the socket thread (which is also single-threaded in the
/// daemon). It is deliberately not Sendable.
public final class InProcessCore {
    /// The configuration in force; every tenant's shm name is replaced by a unique one.
    public let config: Configuration
    let store: Store
    let dispatcher: Dispatcher
    private let outbox: Outbox
    private let wake: WakeSignal
    private let spaces: [TenantSpace]
    private var ids: RecentRequestIDs
    private var bindings = TenantBindings()
    private var isClosed = false

    /// How long `handle` waits for a worker's reply. Far above any request on a small arena; a
    /// reply that takes longer is taken to be lost, which is a bug.
    public static let replyTimeout: Duration = .seconds(60)

    /// Creates each tenant's segment (one open tenant on `config.arena` when the config lists none)
    /// under a name unique to this process and core, so several cores, fuzz jobs or a running
    /// daemon never collide.
    public init(config: Configuration, policies: PolicyBook, logger: Logger) throws {
        var config = config
        var tenants = config.effectiveTenants
        for i in tenants.indices { tenants[i].arena.shmName = Self.uniqueShmName() }
        if config.tenants.isEmpty { config.arena.shmName = tenants[0].arena.shmName } else { config.tenants = tenants }
        self.config = config
        var made: [TenantSpace] = []
        do {
            for t in tenants {
                let sizing = try ArenaSizing.compute(segmentBytes: t.arena.sizeBytes, stagingBytes: t.arena.stagingBytes, models: config.models)
                made.append(TenantSpace(tenant: t, arena: try Arena(name: t.arena.shmName, sizing: sizing), prefix: config.prefix, models: config.models))
            }
        } catch {
            for s in made { s.arena.close() }
            throw error
        }
        spaces = made
        ids = RecentRequestIDs(window: config.server.requestIDWindow, idleSeconds: config.server.requestIDIdleSeconds)
        // As Server.run does: the compaction thread limit is process-wide.
        ComputeThreads.set(config.server.computeThreads)
        store = Store(config: config, spaces: spaces, policies: policies)
        wake = try WakeSignal()
        outbox = Outbox(wake: wake)
        dispatcher = Dispatcher(store: store, outbox: outbox, logger: logger)
    }

    /// Lets Reload requests reload with `load` (as `Server` does with the config file).
    public func enableReload(_ load: @escaping @Sendable () throws -> (PolicyBook, Configuration.Memory)) {
        store.reloader.withLock { $0 = load }
    }

    private static let created = Atomic<Int>(0)

    /// "/kvd-inproc-<pid>-<n>": the pid keeps parallel fuzz jobs apart, n several cores of one process.
    private static func uniqueShmName() -> String {
        "/kvd-inproc-\(getpid())-\(created.add(1, ordering: .relaxed).newValue)"
    }

    /// Dispatches one request frame from `peer` exactly as the socket thread would and returns the
    /// reply frame. `envelope` are the frames between the identity and the request (`[[]]` for a
    /// REQ peer's delimiter). Work handed to a worker queue is waited for; a reply that never comes,
    /// comes twice or comes with the wrong route stops the process (`fatalError`), because the
    /// daemon would then leave a client waiting forever or answer the wrong one.
    public func handle(_ payload: [UInt8], peer: [UInt8], envelope: [[UInt8]] = []) -> [UInt8] {
        precondition(!isClosed, "InProcessCore.handle after close()")
        precondition(!peer.isEmpty, "a ZeroMQ identity is never empty")
        let frames = Frames(envelope: [peer] + envelope, payload: Data(payload))
        if let reply = dispatcher.dispatch(frames, ids: &ids, bindings: &bindings, shuttingDown: false) {
            return take(reply, peer: peer, envelope: envelope)
        }
        let deadline = ContinuousClock.now + Self.replyTimeout
        while true {
            let replies = outbox.takeAll()
            if replies.count > 1 { fatalError("one request produced \(replies.count) replies") }
            if let reply = replies.first { return take(reply, peer: peer, envelope: envelope) }
            let left = deadline - ContinuousClock.now
            if left <= .zero { fatalError("no reply within \(Self.replyTimeout) to a request handed to a worker") }
            var item = pollfd(fd: wake.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&item, 1, Int32(min(left.components.seconds * 1000 + 1, 1000)))
            wake.drain()
        }
    }

    /// The reply's bytes (an owned block is copied out and freed, as sending it would); checks the
    /// route is the request's.
    private func take(_ reply: OutgoingReply, peer: [UInt8], envelope: [[UInt8]]) -> [UInt8] {
        let bytes: [UInt8]
        switch reply.payload {
        case .bytes(let b):
            bytes = b
        case .owned(let block, let offset, let length):
            bytes = Array(UnsafeRawBufferPointer(start: block + offset, count: length))
            free(block)
        }
        // A REQ delimiter comes back; any other envelope is refused before routing beyond the peer.
        let expected = envelope == [[]] ? [peer, []] : [peer]
        if reply.route != expected { fatalError("reply routed to \(reply.route), expected \(expected)") }
        return bytes
    }

    /// Forgets every request id seen so far, so a replayed input meets the same state as when it
    /// was recorded (the daemon refuses an id a connection used recently).
    public func resetRequestIDs() { ids = RecentRequestIDs(window: config.server.requestIDWindow, idleSeconds: config.server.requestIDIdleSeconds) }

    /// The first tenant's shared-memory segment as a client maps it (layout in docs/PROTOCOL.md);
    /// the fuzz configuration has one tenant, the open one. Pages keep
    /// their bytes when freed, so a harness that wants every input to start from the same bytes
    /// clears the free ones itself.
    public var segment: UnsafeMutableRawBufferPointer {
        let arena = spaces[0].arena
        return UnsafeMutableRawBufferPointer(start: arena.base, count: arena.sizing.segmentBytes)
    }

    /// Requests handed to workers whose reply has not been posted yet (0 between `handle` calls,
    /// once a worker has finished its bookkeeping after posting).
    public var inFlight: Int { dispatcher.inFlight.load(ordering: .relaxed) }

    /// Unmaps and unlinks the shared-memory segment. `handle` must not be called afterwards.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        for s in spaces { s.arena.close() }
    }

    deinit { close() }
}
