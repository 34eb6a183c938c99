import Foundation
import KVDCore
import KVDProtocol
import KVDServer
import SwiftProtobuf

/// One in-process daemon core and the state every fuzz input starts from: a *victim* sequence the
/// input may read but never change (checked bit for bit after every input), and a *playground*
/// sequence the input is steered at. After each input the harness releases whatever the input
/// created, rebuilds the playground and checks the arena is back to its baseline, so every input
/// meets the same state (a crash reproduces from its input alone) and memory stays bounded.
final class Harness {
    static let playground: UInt64 = 1
    static let victim: UInt64 = 2
    static let victimTokens = 10  // 2½ pages per head: the last page is partly free
    static let playgroundTokens = 10  // as long as the victim: RankLayers accepts the pair
    static let fuzzPeer = Array("fuzz".utf8)
    /// The harness's own requests come from another connection, so they never meet the input's ids.
    private static let ownPeer = Array("harness".utf8)

    let core: InProcessCore
    let models: [String: ModelLayout]
    let tiny: ModelLayout
    /// Where the staging area starts in the segment (Hello), for observation offsets.
    private(set) var stagingOffset: UInt64 = 0
    private var ownRequestID: UInt64 = 0
    private let victimKeys: Kvd_V1_Tensor
    private let victimValues: Kvd_V1_Tensor
    private var baseline = Kvd_V1_StatsResponse()
    /// The segment's layout (Hello) and the victim's pages, to clear every other page between inputs.
    private(set) var shm = Kvd_V1_SharedMemoryInfo()
    private(set) var victimPages = Set<Int>()
    let trace = ProcessInfo.processInfo.environment["KVD_FUZZ_TRACE"] != nil

    /// What the current input did, as far as later requests of the same input need to know.
    struct Session {
        /// Sequences the input created (id → model name); released when the input ends.
        var created: [UInt64: String] = [:]
        var lastCreated: UInt64?
        var lastRequestID: UInt64 = 0
        var reservation: UInt64 = 0
        /// The open reservation this input made (its sequence and the Reserve reply), for the
        /// program's zero-copy writes; cleared by a successful Commit.
        var reserved: (sequence: UInt64, reply: Kvd_V1_ReserveResponse)?
        var stage: (offset: UInt64, bytes: UInt64)?
        /// Every reply of the input, for the seed writer's check that seeds are valid requests.
        var replies: [Kvd_V1_Response] = []

        mutating func nextRequestID() -> UInt64 {
            lastRequestID += 1
            return lastRequestID
        }
    }
    var session = Session()

    init() throws {
        core = try FuzzConfig.makeCore()
        models = Dictionary(uniqueKeysWithValues: core.config.models.map { ($0.name, $0) })
        tiny = models["tiny"]!
        victimKeys = TensorBytes.kv(tiny, tokens: Self.victimTokens, seed: 0xC0FFEE)
        victimValues = TensorBytes.kv(tiny, tokens: Self.victimTokens, seed: 0xBEEF)
        guard case .hello(let hello) = call(.hello(Kvd_V1_HelloRequest())).body else { fatalError("hello: unexpected reply") }
        stagingOffset = hello.shm.stagingOffset
        shm = hello.shm
        create(Self.victim, victimKeys, victimValues)
        victimPages = pages(of: Self.victim)
        resetPlayground()
        baseline = arenaStats()
        checkVictim()
    }

    func close() { core.close() }

    /// Runs one input (first byte: mode), then puts everything back and checks the invariants.
    func run(_ input: [UInt8]) {
        core.resetRequestIDs()
        session = Session()
        if let mode = input.first {
            switch mode % 5 {
            case 0:
                // One frame, verbatim: decoding and envelope checks see the raw bytes.
                send(Array(input.dropFirst()))
            case 1:
                // Several frames; those that decode get a fresh request id, so a sequence such as
                // Stage then Compact survives mutation of the ids.
                for frame in FrameSplitter.split(input.dropFirst()).prefix(32) { sendWithFreshID(frame) }
            case 2:
                var reader = ByteReader(input, from: 1)
                runProgram(&reader)
            case 3:
                replayJournal(input.dropFirst())
            default:
                decodeBlob(input.dropFirst())
            }
        }
        finishInput()
    }

    /// The model of sequence `id` as far as this input knows (to shape tensors that fit it).
    func model(of id: UInt64) -> ModelLayout { models[session.created[id] ?? "tiny"] ?? tiny }

    // MARK: sending the input's requests

    /// Sends a frame from the fuzz connection, after steering it away from changing the victim.
    /// Checks the reply is a decodable response that echoes the request id and is not INTERNAL
    /// (documented as "a bug; please report").
    @discardableResult
    func send(_ frame: [UInt8], envelope: [[UInt8]] = []) -> Kvd_V1_Response {
        var payload = frame
        var request = try? Kvd_V1_Request(serializedBytes: frame)
        if var r = request, VictimGuard.redirect(&r, victim: Self.victim, to: Self.playground) {
            guard let bytes: [UInt8] = try? r.serializedBytes() else { fatalError("cannot re-encode a decoded request") }
            payload = bytes
            request = r
        }
        if KnownCrashes.enabled, let r = request, let known = KnownCrashes.match(r) {
            if trace { Trace.skipped(known) }
            return Kvd_V1_Response()
        }
        if trace { Trace.request(request, payload.count, envelope) }
        let response = decode(core.handle(payload, peer: Self.fuzzPeer, envelope: envelope))
        if trace { Trace.response(response) }
        let echoed = response.header.requestID
        if echoed != 0, echoed != request?.requestID {
            fatalError("reply carries request id \(echoed), the request had \(request?.requestID ?? 0)")
        }
        if case .error(let e) = response.body, e.code == .internal {
            fatalError("INTERNAL error reply (documented as a bug): \(e.message)")
        }
        note(request, response)
        return response
    }

    /// A frame that decodes gets this input's next request id; anything else goes as it is.
    func sendWithFreshID(_ frame: [UInt8]) {
        guard var r = try? Kvd_V1_Request(serializedBytes: frame) else {
            send(frame)
            return
        }
        r.requestID = session.nextRequestID()
        guard let bytes: [UInt8] = try? r.serializedBytes() else { fatalError("cannot re-encode a decoded request") }
        send(bytes)
    }

    /// Remembers what later requests of the input may refer to.
    private func note(_ request: Kvd_V1_Request?, _ response: Kvd_V1_Response) {
        session.replies.append(response)
        switch response.body {
        case .createSequence(let c):
            if case .createSequence(let r)? = request?.body { session.created[c.sequenceID] = r.model }
            session.lastCreated = c.sequenceID
        case .reserve(let r):
            session.reservation = r.reservationID
            if case .reserve(let q)? = request?.body { session.reserved = (q.sequenceID, r) }
        case .commit(let c): if c.reservedRemaining == 0 { session.reserved = nil }  // keep_reserved leaves it open
        case .stage(let s): session.stage = (s.offset, s.bytes)
        case .compact(let c): Invariants.compaction(c)
        default: break
        }
    }

    private func decode(_ reply: [UInt8]) -> Kvd_V1_Response {
        do { return try Kvd_V1_Response(serializedBytes: reply) } catch { fatalError("undecodable reply (\(reply.count) bytes): \(error)") }
    }

    // MARK: the harness's own requests

    /// A request from the harness's connection; a failure stops the process unless `allowError`.
    @discardableResult
    private func call(_ body: Kvd_V1_Request.OneOf_Body, allowError: Bool = false) -> Kvd_V1_Response {
        ownRequestID += 1
        var request = Kvd_V1_Request()
        request.requestID = ownRequestID
        request.body = body
        guard let bytes: [UInt8] = try? request.serializedBytes() else { fatalError("cannot encode \(body.kindName)") }
        let response = decode(core.handle(bytes, peer: Self.ownPeer))
        if !allowError, case .error(let e) = response.body {
            fatalError("harness \(body.kindName) failed: \(e.code) \(e.message)")
        }
        return response
    }

    private func create(_ id: UInt64, _ keys: Kvd_V1_Tensor, _ values: Kvd_V1_Tensor) {
        var c = Kvd_V1_CreateSequenceRequest()
        c.model = tiny.name
        c.sequenceID = id
        call(.createSequence(c))
        var a = Kvd_V1_AppendRequest()
        a.sequenceID = id
        a.keys = keys
        a.values = values
        call(.append(a))
    }

    private func resetPlayground() {
        create(
            Self.playground, TensorBytes.kv(tiny, tokens: Self.playgroundTokens, seed: 7),
            TensorBytes.kv(tiny, tokens: Self.playgroundTokens, seed: 8))
    }

    private func arenaStats() -> Kvd_V1_StatsResponse {
        guard case .stats(let s) = call(.stats(Kvd_V1_StatsRequest())).body else { fatalError("stats: unexpected reply") }
        return s
    }

    /// Releases what the input created and the playground, rebuilds the playground, and checks
    /// the victim and the arena's books.
    private func finishInput() {
        for id in Set(session.created.keys).union([Self.playground]).sorted() where id != Self.victim {
            var r = Kvd_V1_ReleaseRequest()
            r.sequenceID = id
            // NOT_FOUND when the input released it already, EVICTED when it evicted it; anything
            // else would leak the sequence into later inputs (and fail far from the cause, when
            // max_sequences is reached).
            if case .error(let e) = call(.release(r), allowError: true).body, e.code != .notFound, e.code != .evicted {
                fatalError("harness cannot release sequence \(id) the input created: \(e.code) \(e.message)")
            }
        }
        clearFreeMemory()
        resetPlayground()
        checkVictim()
        let now = arenaStats()
        guard now.sequences == baseline.sequences, now.freePages == baseline.freePages,
            now.stagingUsedBytes == baseline.stagingUsedBytes
        else {
            fatalError(
                "arena not back to baseline after releasing everything: sequences \(now.sequences) (baseline \(baseline.sequences)), "
                    + "free pages \(now.freePages) (\(baseline.freePages)), staging used \(now.stagingUsedBytes) (\(baseline.stagingUsedBytes))")
        }
    }

    /// Page ids a PAGES query lists for `id`.
    private func pages(of id: UInt64) -> Set<Int> {
        var q = Kvd_V1_QueryRequest()
        q.sequenceID = id
        q.mode = .pages
        guard case .query(let reply) = call(.query(q)).body else { fatalError("pages query: unexpected reply") }
        return Set(reply.heads.flatMap { h in
            stride(from: 0, to: h.pageIds.count, by: 4).map { i in
                h.pageIds[h.pageIds.startIndex + i..<h.pageIds.startIndex + i + 4].reversed().reduce(0) { $0 << 8 | Int($1) }
            }
        })
    }

    /// Zeroes every page but the victim's, and the staging area, once only the victim is left:
    /// freed pages keep their bytes, and a Reserve + Commit that writes nothing would otherwise
    /// show an input what earlier inputs stored, so a failure would depend on history rather than
    /// on its input alone.
    private func clearFreeMemory() {
        guard let base = core.segment.baseAddress else { return }
        let pageBytes = Int(shm.pageBytes)
        for page in 0..<Int(shm.pageCount) where !victimPages.contains(page) {
            memset(base + Int(shm.pagesOffset) + page * pageBytes, 0, pageBytes)
        }
        memset(base + Int(shm.stagingOffset), 0, Int(shm.stagingBytes))
    }

    /// The victim's K, V, positions and log-weights, read back inline, must be what was appended.
    private func checkVictim() {
        var q = Kvd_V1_QueryRequest()
        q.sequenceID = Self.victim
        q.mode = .inline
        guard case .query(let reply) = call(.query(q)).body else { fatalError("victim query: unexpected reply") }
        let m = tiny
        let t = Self.victimTokens
        guard reply.length == UInt64(t), reply.generation == 1, reply.heads.count == m.layers * m.kvHeads else {
            fatalError("victim changed: length \(reply.length), generation \(reply.generation), \(reply.heads.count) heads")
        }
        let positions = Data((0..<Int32(t)).flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) })
        let headBytes = t * m.tokenBytes
        for (i, head) in reply.heads.enumerated() {
            let slice = i * headBytes..<(i + 1) * headBytes
            guard head.layer == UInt32(i / m.kvHeads), head.head == UInt32(i % m.kvHeads), head.numTokens == UInt32(t),
                !head.aliased, head.positions == positions, head.logWeights.isEmpty,
                head.keys == victimKeys.data[slice], head.values == victimValues.data[slice]
            else {
                fatalError("victim changed: head \(i) (layer \(head.layer), head \(head.head)) differs from what was appended")
            }
        }
    }
}

/// Splits the frames of a multi-frame input at "\u{FE}KVD" (a separator survives libFuzzer's
/// insertions and erasures better than length prefixes would).
enum FrameSplitter {
    static let separator: [UInt8] = [0xFE, 0x4B, 0x56, 0x44]

    static func split(_ bytes: ArraySlice<UInt8>) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        var start = bytes.startIndex
        var i = start
        while i + separator.count <= bytes.endIndex {
            if bytes[i..<i + separator.count].elementsEqual(separator) {
                frames.append(Array(bytes[start..<i]))
                i += separator.count
                start = i
            } else {
                i += 1
            }
        }
        frames.append(Array(bytes[start...]))
        return frames
    }

    static func join(_ frames: [[UInt8]]) -> [UInt8] { Array(frames.joined(separator: separator)) }
}
