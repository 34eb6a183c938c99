import Dispatch
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

/// The daemon: creates the arena, binds the ROUTER socket and serves until SIGTERM or SIGINT.
/// One thread (the caller of `run`) owns the socket; sequence work runs on Dispatch workers and its
/// replies come back through the outbox. Shutdown stops accepting, answers what arrives meanwhile with
/// UNAVAILABLE, waits for in-flight work, sends every reply, then unmaps and unlinks everything.
public final class Server: Sendable {
    let config: Configuration
    let logger: Logger
    let policies: PolicyBook
    /// Builds a new policy book and memory-manager settings from the config file (SIGHUP); throws
    /// to keep the current ones.
    let reloadPolicies: @Sendable () throws -> (PolicyBook, Configuration.Memory)
    private let stopRequested = Atomic<Bool>(false)
    private let reloadRequested = Atomic<Bool>(false)
    private let wake: WakeSignal


    public init(
        config: Configuration, policies: PolicyBook, logger: Logger,
        reloadPolicies: @escaping @Sendable () throws -> (PolicyBook, Configuration.Memory)
    ) throws {
        self.config = config
        self.policies = policies
        self.reloadPolicies = reloadPolicies
        self.logger = logger
        wake = try WakeSignal()
    }

    /// Asks the serving loop to shut down; safe from any thread.
    public func stop() {
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        wake.wake()
    }

    /// Asks the serving loop to reload policies and rules (SIGHUP); safe from any thread.
    public func reload() {
        reloadRequested.store(true, ordering: .sequentiallyConsistent)
        wake.wake()
    }

    /// How a serving loop ended.
    public enum Ending: Sendable {
        /// Every request finished; nothing runs on the worker threads.
        case drained
        /// The drain time ran out with requests still running on worker threads. The caller must
        /// end the process without running static destructors (`_exit`): libraries such as
        /// OpenBLAS free their buffers in them, under a worker that may still be inside one.
        case workersStillRunning
    }

    /// Serves until `stop()`; throws if start-up fails (arena or bind), after cleaning up.
    @discardableResult
    public func run() throws -> Ending {
        var spaces: [TenantSpace] = []
        // Until the drain has finished, workers may touch any tenant's pages: unmap only then.
        var drained = true
        // A durable segment kept on exit stays for the next start to adopt, with its journal.
        let keep = config.durability.enabled && config.durability.keepOnExit
        defer {
            for space in spaces {
                if keep && drained {
                    space.arena.close(keepSegment: true)
                } else {
                    if drained { space.arena.close() } else { space.arena.unlinkKeepingMapping() }
                    SegmentOpener.removeFiles(space)
                }
            }
        }
        var recovered: [(TenantSpace, SegmentOpener.Recovered)] = []
        for tenant in config.effectiveTenants {
            let (space, found) = try SegmentOpener.open(tenant, config, logger)
            spaces.append(space)
            if let found { recovered.append((space, found)) }
        }
        ComputeThreads.set(config.server.computeThreads)
        let metrics = config.metrics.enabled ? ServerMetrics() : nil
        let store = Store(
            config: config, spaces: spaces, policies: policies, logger: logger, remote: RemoteConnector.tier(config.remote), metrics: metrics)
        store.reloader.withLock { $0 = reloadPolicies }
        for (space, r) in recovered {
            store.restore(space, r.state, holders: r.holders)
            logger.info(
                "tenant \(space.name): adopted shm \(space.arena.name) left by an earlier kvd: \(r.state.sequences.count) sequences, "
                    + "\(space.pages.usedCount) pages in use, \(r.report.snapshotRecords) snapshot + \(r.report.journalRecords) journal records"
                    + (r.report.tornBytes > 0 ? ", \(r.report.tornBytes) bytes of an unanswered last record dropped" : "")
                    + String(format: ", %.1f ms", r.elapsedMs))
        }
        let manager = MemoryManager(store: store)
        // Before the segments are unmapped (defers run in reverse order).
        defer { manager.stop() }
        let outbox = Outbox(wake: wake)
        let dispatcher = Dispatcher(store: store, outbox: outbox, logger: logger)

        let hardLimit = min(Int(Int64.max / 4), config.server.maxMessageBytes * 4 + (16 << 20))
        let socket = try RouterSocket(hardMessageLimit: hardLimit)
        let endpoints = EndpointBinder(config: config, logger: logger)
        defer {
            socket.close()  // also ends the ZAP handler
            endpoints.removeSocketFiles()  // only the files this daemon created, never a live one's
        }
        try endpoints.bind(socket)
        if !config.memory.eventsEndpoint.isEmpty {
            store.setEvents(try EventPublisher(endpoint: config.memory.eventsEndpoint, context: socket.context, config: config, logger: logger))
        }
        // Before the socket's context is terminated (defers run in reverse order).
        defer {
            store.events?.close()
            store.setEvents(nil)
        }
        // Last of the start-up steps that can fail: a taken port is refused before anything is served.
        var endpoint: MetricsEndpoint?
        if let metrics {
            endpoint = try MetricsEndpoint(config.metrics, metrics: metrics)
            metrics.watch(store)
            logger.info("metrics: serving http://\(endpoint!.listening)/metrics")
        }
        // Before the segments are unmapped (defers run in reverse order): no scrape runs after this.
        defer {
            endpoint?.stop()
            metrics?.unwatch()
        }
        manager.start()
        logger.info("kvd \(KVDVersion.string) serving on \(config.server.endpoints.joined(separator: ", "))")
        let service = ServiceNotifier()
        service.ready(status: "serving on \(config.server.endpoints.joined(separator: ", "))")
        for space in spaces {
            let z = space.arena.sizing
            logger.info(
                "tenant \(space.name)\(space === store.openSpace ? " (open)" : ""): shm \(space.arena.name), "
                    + "\(z.pageCount) pages of \(z.pageBytes) bytes, \(z.stagingBytes) staging bytes")
        }

        // After a reply went out: its metrics and, at debug, the request's one log line.
        func replied(_ trace: RequestTrace?) {
            guard let trace else { return }
            let sentNs = DispatchTime.now().uptimeNanoseconds
            metrics?.replied(trace, sentNs: sentNs)
            logger.debug("request \(trace.requestID) \(trace.kind): \(trace.code)", [
                "request_id": trace.requestID, "kind": trace.kind, "code": trace.code,
                "ms": Double(sentNs &- min(sentNs, trace.receivedNs)) / 1e6,
            ])
        }
        var ids = RecentRequestIDs(window: config.server.requestIDWindow, idleSeconds: config.server.requestIDIdleSeconds)
        var bindings = TenantBindings()
        var shuttingDown = false
        var drainDeadline = ContinuousClock.now
        while true {
            let (readable, woken) = socket.poll(watchSocket: true, fd: wake.fd, timeoutMs: shuttingDown ? 50 : -1)
            if woken { wake.drain() }
            for reply in outbox.takeAll() {
                try? socket.send(reply)
                replied(reply.trace)
            }
            if reloadRequested.exchange(false, ordering: .sequentiallyConsistent) {
                service.reloading()
                // Serving again either way: a refused reload keeps the policies that were running.
                defer { service.ready(status: "serving on \(config.server.endpoints.joined(separator: ", "))") }
                do throws(KVDError) {
                    _ = try store.reloadPolicies()
                } catch {
                    logger.error(error.message)
                }
            }
            if !shuttingDown, stopRequested.load(ordering: .sequentiallyConsistent) {
                shuttingDown = true
                manager.stop()  // no reclaim while draining
                drainDeadline = .now + .milliseconds(Int(config.server.drainSeconds * 1000))
                socket.unbindAll()
                logger.info("shutting down: finishing \(dispatcher.inFlight.load(ordering: .relaxed)) in-flight requests")
                service.stopping(status: "draining \(dispatcher.inFlight.load(ordering: .relaxed)) in-flight requests")
            }
            if readable {
                // Drain what is queued, but bounded, so replies and the stop flag are seen promptly.
                for _ in 0..<256 {
                    do {
                        let got = try socket.receive { frames in
                            if let reply = dispatcher.dispatch(frames, ids: &ids, bindings: &bindings, shuttingDown: shuttingDown) {
                                try? socket.send(reply)
                                replied(reply.trace)
                            }
                        }
                        if !got { break }
                    } catch {
                        logger.error("receive failed: \(error)")
                        break
                    }
                }
            }
            if shuttingDown {
                let idle = dispatcher.inFlight.load(ordering: .relaxed) == 0 && outbox.isEmpty
                if idle || ContinuousClock.now >= drainDeadline {
                    if !idle {
                        drained = false
                        logger.warning("shutdown: gave up waiting for in-flight requests; the segments stay mapped until exit")
                    }
                    break
                }
            }
        }
        logger.info("stopped; removed \(spaces.map(\.arena.name).joined(separator: ", ")) and the ipc socket files")
        return drained ? .drained : .workersStillRunning
    }
}
