import Dispatch
import Foundation
import KVDCore
import KVDProtocol
import SwiftProtobuf
import Synchronization

/// What a handler answers: a response body message, or a body already in wire form (Query, whose
/// hand-written encoder is far cheaper than building one message per head).
enum Reply {
    case body(Kvd_V1_Response.OneOf_Body)
    /// The serialized message of oneof field `field` of kvd.v1.Response, after free headroom.
    case wire(field: Int, writer: WireWriter)
}

/// Turns received frames into replies. Runs on the socket thread: it decodes, checks the envelope,
/// answers cheap requests at once and hands sequence requests to that sequence's serial queue, whose
/// reply comes back through the outbox.
final class Dispatcher: Sendable {
    let store: Store
    let outbox: Outbox
    let logger: Logger
    /// Requests handed to workers and not yet answered; shutdown waits for this to reach 0.
    let inFlight = Atomic<Int>(0)

    init(store: Store, outbox: Outbox, logger: Logger) {
        self.store = store
        self.outbox = outbox
        self.logger = logger
    }

    /// Handles one received message. Returns the reply to send now, or nil when a worker will post it.
    /// `ids` and `bindings` belong to the socket thread, the only caller.
    func dispatch(
        _ frames: Frames, ids: inout RecentRequestIDs, bindings: inout TenantBindings, shuttingDown: Bool
    ) -> OutgoingReply? {
        guard let identity = frames.envelope.first else { return nil }
        let traced = store.metrics != nil || logger.level >= .debug
        var route = ReplyRoute(frames: [identity], trace: traced ? RequestTrace() : nil)
        let middle = frames.envelope.dropFirst()
        // A REQ peer puts an empty delimiter before its message and expects it back.
        if middle.count == 1, middle.first!.isEmpty { route.frames.append([]) }
        func reply(_ requestID: UInt64, _ result: Result<Kvd_V1_Response.OneOf_Body, KVDError>) -> OutgoingReply {
            answer(route, requestID, result.map(Reply.body))
        }
        guard middle.count == route.frames.count - 1 else {
            return reply(0, .failure(.invalidArgument("send one frame per request (got \(middle.count + 1)); the frame is a serialized kvd.v1.Request")))
        }
        let payload = frames.payload
        guard !payload.isEmpty else {
            return reply(0, .failure(.invalidArgument("empty frame; send a serialized kvd.v1.Request")))
        }
        let limit = store.config.server.maxMessageBytes
        guard payload.count <= limit else {
            return reply(0, .failure(.invalidArgument(
                "request of \(payload.count) bytes is larger than server.max_message_bytes (\(limit)); split it or use Reserve/Commit")))
        }
        let request: Kvd_V1_Request
        do {
            request = try Kvd_V1_Request(serializedBytes: payload)
        } catch {
            return reply(0, .failure(.invalidArgument("undecodable request (\(payload.count) bytes): \(error); send a serialized kvd.v1.Request")))
        }
        let rid = request.requestID
        route.trace?.kind = request.body?.kindName ?? "invalid"
        route.trace?.requestID = request.requestID
        if shuttingDown { return reply(rid, .failure(.unavailable("shutting down; no new requests are accepted"))) }
        guard request.protocolVersion == 0 || ProtocolVersion.supported.contains(request.protocolVersion) else {
            return reply(rid, .failure(.unimplemented(
                "protocol version \(request.protocolVersion) is not supported; this server speaks \(ProtocolVersion.supported)")))
        }
        guard rid != 0 else { return reply(0, .failure(.invalidArgument("request_id must be non-zero"))) }
        let now = DispatchTime.now().uptimeNanoseconds
        guard ids.record(rid, peer: identity, now: now) else {
            return reply(rid, .failure(.alreadyExists("request_id \(rid) was used recently by this connection; use a fresh id per request")))
        }
        guard let kind = request.body else {
            let known = "hello, create_sequence, append, reserve, commit, query, compact, release, stats, stage, rank_layers, keep_alive, pin, lookup, fork, restore, list_sequences, list_policies, reload, evict"
            // Unknown fields mean a body kind from a newer schema; nothing at all is a malformed request.
            if request.unknownFields.data.isEmpty {
                return reply(rid, .failure(.invalidArgument("request has no body; set one of: \(known)")))
            }
            return reply(rid, .failure(.unimplemented(
                "request kind not known to this server (protocol \(ProtocolVersion.current)); known kinds: \(known)")))
        }
        let peer = PeerIdentity(routingID: identity, userID: frames.userID, peerAddress: frames.peerAddress)
        // Every request renews the lease of everything its connection owns.
        let connection = store.connections.touch(identity, now: now)
        if case .hello(let r) = kind {
            let bound = TenantAuth.hello(r, peer, &bindings, store, now: now)
            let admin = TenantAuth.isAdmin(peer, bindings, store)
            return reply(rid, bound.flatMap { space in
                run { () throws(KVDError) in
                    var hello = TenantStore(shared: store, space: space, connection: identity)
                    hello.isAdmin = admin
                    return .hello(try HelloHandler.handle(r, hello))
                }
            })
        }
        let space: TenantSpace
        switch TenantAuth.resolve(peer, &bindings, store, now: now) {
        case .success(let s): space = s
        case .failure(let e): return reply(rid, .failure(e))
        }
        var scoped = TenantStore(shared: store, space: space, connection: identity)
        scoped.connectionNumber = connection
        scoped.now = now
        if kind.needsAdmin {
            scoped.isAdmin = TenantAuth.isAdmin(peer, bindings, store)
            do throws(KVDError) { try AdminCheck.require(kind.kindName, scoped) } catch { return reply(rid, .failure(error)) }
        }
        switch kind {
        case .hello: preconditionFailure("answered above")
        case .createSequence(let r) where !r.adoptTokenIds.isEmpty && store.sharesPrefixes:
            let creating = scoped  // may wait for the remote tier: on a worker
            return onWorker(rid, route) { () throws(KVDError) in .createSequence(try CreateSequenceHandler.handle(r, creating)) }
        case .createSequence(let r): return reply(rid, run { () throws(KVDError) in .createSequence(try CreateSequenceHandler.handle(r, scoped)) })
        case .stats(let r) where r.sequenceID == 0: return reply(rid, run { .stats(StatsHandler.arena(scoped)) })
        case .stats(let r): return onSequence(r.sequenceID, rid, route, scoped, cheap: true) { e, s in .body(.stats(StatsHandler.handle(r, e, s))) }
        case .append(let r): return onSequence(r.sequenceID, rid, route, scoped, resizes: true) { e, s throws(KVDError) in .body(.append(try AppendHandler.handle(r, e, s))) }
        case .reserve(let r): return onSequence(r.sequenceID, rid, route, scoped, cheap: true, resizes: true) { e, s throws(KVDError) in .body(.reserve(try ReserveHandler.handle(r, e, s))) }
        case .commit(let r): return onSequence(r.sequenceID, rid, route, scoped, cheap: true, resizes: true) { e, s throws(KVDError) in .body(.commit(try CommitHandler.handle(r, e, s))) }
        case .query(let r): return onSequence(r.sequenceID, rid, route, scoped, cheap: QueryHandler.copiesNoKV(r)) { e, s throws(KVDError) in .wire(field: 15, writer: try QueryHandler.handle(r, e, s)) }
        case .compact(let r): return onSequence(r.sequenceID, rid, route, scoped, resizes: true) { e, s throws(KVDError) in .body(.compact(try CompactHandler.handle(r, e, s))) }
        case .release(let r): return onSequence(r.sequenceID, rid, route, scoped, cheap: true, resizes: true) { e, s throws(KVDError) in .body(.release(try ReleaseHandler.handle(r, e, s))) }
        case .rankLayers(let r): return rankLayers(r, rid, route, scoped)
        case .stage(let r): return onSequence(r.sequenceID, rid, route, scoped) { e, s throws(KVDError) in .body(.stage(try StageHandler.handle(r, e, s))) }
        case .keepAlive(let r): return reply(rid, run { () throws(KVDError) in .keepAlive(try KeepAliveHandler.handle(r, scoped)) })
        case .pin(let r): return onSequence(r.sequenceID, rid, route, scoped, cheap: true) { e, s throws(KVDError) in .body(.pin(try PinHandler.handle(r, e, s))) }
        case .lookup(let r) where store.sharesPrefixes:
            let looking = scoped  // may wait for the remote tier: on a worker
            return onWorker(rid, route) { () throws(KVDError) in .lookup(try LookupHandler.handle(r, looking)) }
        case .lookup(let r): return reply(rid, run { () throws(KVDError) in .lookup(try LookupHandler.handle(r, scoped)) })
        // Copies at most one partial page per head: cheap enough for the socket thread when idle.
        case .fork(let r): return onSequence(r.sequenceID, rid, route, scoped, cheap: true) { e, s throws(KVDError) in .body(.fork(try ForkHandler.handle(r, e, s))) }
        // Waits for the remote store: on a worker, never here.
        case .restore(let r):
            let restoring = scoped
            return onWorker(rid, route) { () throws(KVDError) in .restore(try RestoreHandler.handle(r, restoring)) }
        // Operating kvd (kvctl): listing waits on each sequence's queue, reload reads the config file.
        case .listSequences:
            let listing = scoped
            return onWorker(rid, route) { .listSequences(ListSequencesHandler.handle(listing)) }
        case .listPolicies: return reply(rid, .success(.listPolicies(ListPoliciesHandler.handle(scoped))))
        case .reload:
            let reloading = scoped
            return onWorker(rid, route) { () throws(KVDError) in .reload(try ReloadHandler.handle(reloading)) }
        case .evict(let r): return onSequence(r.sequenceID, rid, route, scoped, resizes: true) { e, s throws(KVDError) in .body(.evict(try EvictHandler.handle(r, e, s))) }
        }
    }

    /// The encoded reply to request `rid`, carrying its trace (with the outcome) to the socket.
    private func answer(_ route: ReplyRoute, _ rid: UInt64, _ result: Result<Reply, KVDError>) -> OutgoingReply {
        OutgoingReply(route: route.frames, payload: encode(rid, result), trace: route.trace?.finished(result))
    }

    private func run(_ body: () throws(KVDError) -> Kvd_V1_Response.OneOf_Body) -> Result<Kvd_V1_Response.OneOf_Body, KVDError> {
        do throws(KVDError) { return .success(try body()) } catch { return .failure(error) }
    }

    /// Runs `work` after earlier requests for the same sequence. `cheap` work (bookkeeping only, no
    /// K/V bytes copied or scored) on an idle sequence runs right here on the socket thread and
    /// answers at once: handing a 30 µs request to a worker and its reply back through the outbox
    /// cost two thread switches, more than the work. Everything else queues on the sequence's
    /// serial queue and replies through the outbox. A cheap request that finds the segment full
    /// (Reserve) is re-run on a worker, where it may wait for the memory manager to make room: the
    /// socket thread never waits for a reclaim.
    private func onSequence(
        _ id: UInt64, _ rid: UInt64, _ route: ReplyRoute, _ scoped: TenantStore, cheap: Bool = false, resizes: Bool = false,
        _ work: @escaping @Sendable (SequenceState, TenantStore) throws(KVDError) -> Reply
    ) -> OutgoingReply? {
        let entry: SequenceEntry
        do { entry = try scoped.entry(id) } catch { return answer(route, rid, .failure(error)) }
        entry.lease.touch(by: scoped.connectionNumber, now: scoped.now)
        // Runs on the sequence's queue (onQueue checks it).
        @Sendable func result(_ store: TenantStore) -> Result<Reply, KVDError> {
            entry.onQueue { state in
                if state.sequence.isReleased {
                    return .failure(entry.space.evictions.error(for: id) ?? .notFound("sequence \(id) not found; it has been released"))
                }
                // Only requests that can change the pages held refresh what the manager ranks by
                // (a sum over every head: not free on a Stats or Query of a 90-head sequence).
                defer { if resizes { entry.refreshGauges(state) } }
                do throws(KVDError) { return .success(try work(state, store)) } catch { return .failure(error) }
            }
        }
        if cheap, entry.tryClaim() {
            // Idle queue, claimed: sync runs the block on this thread, after (and visible to) all earlier work.
            var inline = scoped
            inline.mayReclaim = false
            let outcome = entry.queue.sync { result(inline) }
            entry.unclaim()
            if case .failure(let e) = outcome, e.code == .resourceExhausted, scoped.memory.reclaimWaitMilliseconds > 0 {
                // Nothing changed (allocations are all or nothing): run it again where waiting is fine.
            } else {
                return answer(route, rid, outcome)
            }
        }
        inFlight.add(1, ordering: .relaxed)
        entry.pending.add(1, ordering: .relaxed)
        entry.queue.async { [self] in
            let reply = answer(route, rid, result(scoped))
            // Idle before the post, so the client's next cheap request can already run inline.
            entry.pending.subtract(1, ordering: .releasing)
            outbox.post(reply)
            inFlight.subtract(1, ordering: .relaxed)
        }
        return nil
    }

    /// Runs `work` on a worker and replies through the outbox (work that may wait, e.g. for Redis).
    private func onWorker(_ rid: UInt64, _ route: ReplyRoute, _ work: @escaping @Sendable () throws(KVDError) -> Kvd_V1_Response.OneOf_Body) -> OutgoingReply? {
        inFlight.add(1, ordering: .relaxed)
        store.workers.async { [self] in
            let result: Result<Reply, KVDError>
            do throws(KVDError) { result = .success(.body(try work())) } catch { result = .failure(error) }
            outbox.post(answer(route, rid, result))
            inFlight.subtract(1, ordering: .relaxed)
        }
        return nil
    }

    /// RankLayers reads several sequences: it runs on a worker, visiting each sequence on its own
    /// queue (so no request changes it meanwhile), and replies through the outbox.
    private func rankLayers(_ r: Kvd_V1_RankLayersRequest, _ rid: UInt64, _ route: ReplyRoute, _ scoped: TenantStore) -> OutgoingReply? {
        let entries: [SequenceEntry]
        do {
            guard !r.sequenceIds.isEmpty else { throw KVDError.invalidArgument("rank_layers: give at least one sequence_id") }
            var seen = Set<UInt64>()
            entries = try r.sequenceIds.map { id throws(KVDError) in
                guard seen.insert(id).inserted else { throw .invalidArgument("rank_layers: sequence \(id) listed twice") }
                return try scoped.entry(id)
            }
        } catch let error as KVDError {
            return answer(route, rid, .failure(error))
        } catch {
            return answer(route, rid, .failure(.internalError("\(error)")))
        }
        inFlight.add(1, ordering: .relaxed)
        store.workers.async { [self] in
            let result: Result<Reply, KVDError>
            do throws(KVDError) { result = .success(.body(.rankLayers(try RankLayersHandler.handle(entries, scoped)))) } catch { result = .failure(error) }
            outbox.post(answer(route, rid, result))
            inFlight.subtract(1, ordering: .relaxed)
        }
        return nil
    }

    /// Serializes a response and counts it.
    func encode(_ requestID: UInt64, _ result: Result<Reply, KVDError>) -> OutgoingReply.Payload {
        var response = Kvd_V1_Response()
        response.header.protocolVersion = ProtocolVersion.current
        response.header.serverVersion = KVDVersion.string
        response.header.requestID = requestID
        response.header.instanceID = store.instanceID
        store.requests.add(1, ordering: .relaxed)
        var wire: (field: Int, writer: WireWriter)?
        switch result {
        case .success(.body(let body)):
            response.body = body
        case .success(.wire(let field, let writer)):
            wire = (field, writer)
        case .failure(let error):
            store.errors.add(1, ordering: .relaxed)
            if error.code == .internal { logger.error("request \(requestID): \(error.message)") }
            response.body = .error(Kvd_V1_Error(error))
        }
        do {
            let header: [UInt8] = try response.serializedBytes()
            guard let (field, writer) = wire else { return .bytes(header) }
            // A message is the concatenation of its fields: the header, then the body field, whose
            // tag and length go into the headroom the handler left in front of the body.
            let prefix = header + WireWriter.fieldHeader(field, length: writer.count - writer.headroom)
            guard writer.prepend(prefix) else { return .bytes(prefix + writer.body) }
            let (block, offset, length) = writer.take(prefixLength: prefix.count)
            return .owned(block: block, offset: offset, length: length)
        } catch {
            logger.error("cannot serialize response to request \(requestID): \(error)")
            var fallback = Kvd_V1_Response()
            fallback.header = response.header
            fallback.body = .error(Kvd_V1_Error(.internalError("response could not be serialized: \(error)")))
            return .bytes((try? fallback.serializedBytes()) ?? [])
        }
    }
}
