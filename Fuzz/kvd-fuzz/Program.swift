import Foundation
import KVDCore
import KVDProtocol

/// Program mode: the input is a list of fixed-size records, each one request built from choices
/// (which sequence, how many tokens, which method and parameters, where the observation queries
/// are). Building valid requests from choices gets the fuzzer past decoding and shape checks into
/// the handlers' arithmetic; fixed-size records keep a mutation local to one request, and a record
/// of zeros is a valid request on the playground (every first choice is a valid value).
extension Harness {
    static let recordBytes = 32
    static let maxRecords = 48

    enum Op: Int, CaseIterable {
        case hello, create, append, reserve, commit, query, compact, release, stats, stage, rankLayers
        /// Not a request: write K/V into the open reservation's slots, as a zero-copy client does.
        case writeReserved
        // Operating kvd (kvctl's requests); after writeReserved so older corpora keep their ops.
        case listSequences, listPolicies, reload, evict
    }

    /// The opcode byte: the op, and above the first rows a change to the envelope (request id 0, a
    /// reused id, a REQ delimiter, an unsupported protocol version, an extra frame).
    func runProgram(_ input: inout ByteReader) {
        for _ in 0..<Self.maxRecords where !input.isAtEnd {
            var r = ByteReader(input.bytes(Self.recordBytes))
            let code = Int(r.u8())
            let op = Op(rawValue: code % Op.allCases.count)!
            if op == .writeReserved {
                writeReserved(&r)
            } else {
                // Counted from the top, so the envelope changes (18...23) stay reachable from one
                // byte however many ops there are: the top row of codes is 23, the next 22, ...
                sendBuilt(body(op, &r), modifier: 23 - (255 - code) / Op.allCases.count, &r)
            }
        }
    }

    private func sendBuilt(_ body: Kvd_V1_Request.OneOf_Body, modifier: Int, _ r: inout ByteReader) {
        var request = Kvd_V1_Request()
        request.body = body
        var envelope: [[UInt8]] = []
        switch modifier {
        case 23: request.requestID = 0
        case 22: request.requestID = session.lastRequestID  // reused (0 when first)
        default: request.requestID = session.nextRequestID()
        }
        switch modifier {
        case 21: envelope = [[]]
        case 20: request.protocolVersion = r.pick([2, 99, UInt32.max])
        case 19: envelope = [[1], [2]]
        case 18: request.protocolVersion = 1
        default: break
        }
        guard let bytes: [UInt8] = try? request.serializedBytes() else { fatalError("cannot encode \(body.kindName)") }
        send(bytes, envelope: envelope)
    }

    private func body(_ op: Op, _ r: inout ByteReader) -> Kvd_V1_Request.OneOf_Body {
        switch op {
        case .hello:
            var h = Kvd_V1_HelloRequest()
            h.protocolVersions = (0..<Int(r.u8() % 3)).map { _ in r.pick([1, 0, 2, UInt32.max]) }
            h.clientName = r.pick(["", "fuzz", String(repeating: "x", count: 300)])
            return .hello(h)
        case .create:
            var c = Kvd_V1_CreateSequenceRequest()
            c.model = r.pick(FuzzConfig.models)
            c.sequenceID = r.choose([0, 3, 4, Self.playground, Self.victim]) { $0.number() }
            c.tenant = r.pick(["", "a", "tenant-b"])
            return .createSequence(c)
        case .append:
            var a = Kvd_V1_AppendRequest()
            a.sequenceID = sequence(&r)
            let m = model(of: a.sequenceID)
            let tokens = r.choose([2, 1, 3, 4, 5, 8]) { $0.number32() }
            let shape = [UInt32(m.layers), UInt32(m.kvHeads), tokens, UInt32(m.headDim)]
            a.keys = tensor(&r, shape, m.dtype)
            a.values = tensor(&r, shape, m.dtype)
            return .append(a)
        case .reserve:
            var v = Kvd_V1_ReserveRequest()
            v.sequenceID = sequence(&r)
            v.numTokens = r.choose([3, 1, 4, 5, 8, 0]) { $0.number32() }
            v.slots = r.bool()
            return .reserve(v)
        case .commit:
            var c = Kvd_V1_CommitRequest()
            c.sequenceID = sequence(&r)
            c.reservationID = r.choose([session.reservation, 0, session.reservation &+ 1]) { $0.number() }
            c.numTokens = r.choose([2, 1, 3, 0, 4]) { $0.number32() }
            c.abort = r.u8() % 4 == 3
            c.keepReserved = r.u8() % 3 == 1  // with abort too: that pair is refused
            return .commit(c)
        case .query:
            var q = Kvd_V1_QueryRequest()
            q.sequenceID = sequence(&r)
            q.mode = Kvd_V1_QueryMode(rawValue: Int(r.u8() % 6)) ?? .pages  // 5: an unknown mode
            q.layers = (0..<Int(r.u8() % 4)).map { _ in r.choose([0, 1, 2, 3]) { $0.number32() } }
            q.pageRefs = r.bool()
            return .query(q)
        case .compact:
            return .compact(compact(&r))
        case .release:
            var x = Kvd_V1_ReleaseRequest()
            x.sequenceID = sequence(&r)
            return .release(x)
        case .stats:
            var s = Kvd_V1_StatsRequest()
            s.sequenceID = r.bool() ? sequence(&r) : 0
            return .stats(s)
        case .stage:
            var s = Kvd_V1_StageRequest()
            s.sequenceID = sequence(&r)
            s.bytes = r.choose([4096, 1, 16, 128, 16384, 16385]) { $0.number() }
            return .stage(s)
        case .rankLayers:
            var k = Kvd_V1_RankLayersRequest()
            k.sequenceIds = (0...Int(r.u8() % 3)).map { _ in sequence(&r) }
            return .rankLayers(k)
        case .listSequences:
            return .listSequences(Kvd_V1_ListSequencesRequest())
        case .listPolicies:
            return .listPolicies(Kvd_V1_ListPoliciesRequest())
        case .reload:
            return .reload(Kvd_V1_ReloadRequest())
        case .evict:
            var e = Kvd_V1_EvictRequest()
            e.sequenceID = sequence(&r)
            return .evict(e)
        case .writeReserved:
            fatalError("writeReserved sends no request")
        }
    }

    /// Mostly the playground; sometimes the victim (reads only reach it), the last sequence this
    /// input created, 0 (never valid) or any id.
    private func sequence(_ r: inout ByteReader) -> UInt64 {
        switch r.u8() % 8 {
        case 4: Self.victim
        case 5: session.lastCreated ?? Self.playground
        case 6: 0
        case 7: r.number()
        default: Self.playground
        }
    }

    private func compact(_ r: inout ByteReader) -> Kvd_V1_CompactRequest {
        var c = Kvd_V1_CompactRequest()
        c.sequenceID = sequence(&r)
        let m = model(of: c.sequenceID)
        c.method = r.pick(FuzzConfig.methods)
        c.policy = r.u8() % 3 == 1 ? r.pick(FuzzConfig.policies) : ""
        c.params = (0..<Int(r.u8() % 4)).map { _ in Params.any(&r) }
        let window = r.choose([1, 2, 3, 4]) { $0.number32() }
        let dtype: DType = r.bool() ? .f32 : m.dtype
        let shape = [UInt32(m.layers), UInt32(m.qHeads), window, UInt32(m.headDim)]
        switch r.u8() % 4 {
        case 1, 3:
            c.queries = tensor(&r, shape, dtype)
        case 2:
            var s = Kvd_V1_SharedTensor()
            s.dtype = Kvd_V1_DType(dtype)
            s.shape = shape
            let twist = r.u8() % 16
            if twist == 1 { s.dtype = r.pick([.unspecified, .bf16, Kvd_V1_DType(rawValue: 9)!]) }
            if twist == 2 { s.shape[Int(r.u8() % 4)] = r.number32() }
            if twist == 3 { s.shape.removeLast() }
            let needed = UInt64(m.layers * m.qHeads * m.headDim * dtype.size) &* UInt64(window)
            // Offsets around this input's staging buffer: its start, inside, flush with its end,
            // just past it, just before it, or anywhere (the 64-bit edges included).
            let base = session.stage?.offset ?? stagingOffset
            let end = base &+ (session.stage?.bytes ?? 0)
            switch r.u8() % 6 {
            case 0: s.offset = base
            case 1: s.offset = base &+ UInt64(r.u8()) &* 16
            case 2: s.offset = end &- needed
            case 3: s.offset = end &- needed &+ UInt64(1 + r.u8() % 16)
            case 4: s.offset = base &- UInt64(1 + r.u8() % 64)
            default: s.offset = r.number()
            }
            c.queriesShm = s
        default:
            break
        }
        return c
    }

    /// Largest tensor built, in elements: requests stay near the message limit, not far beyond.
    private static let maxElements = 2048

    /// A tensor of `shape` and `dtype`, or with one thing wrong (a dimension, the rank, the dtype,
    /// a byte short or over), filled with finite values or numeric corner cases.
    private func tensor(_ r: inout ByteReader, _ shape: [UInt32], _ dtype: DType) -> Kvd_V1_Tensor {
        var t = Kvd_V1_Tensor()
        t.shape = shape
        t.dtype = Kvd_V1_DType(dtype)
        let twist = r.u8() % 16
        switch twist {
        case 1: t.shape[Int(r.u8()) % t.shape.count] = r.number32()
        case 2: t.shape.removeLast()
        case 3: t.shape.append(1)
        case 4: t.dtype = r.pick([.unspecified, .f16, .bf16, .f32, Kvd_V1_DType(rawValue: 9)!])
        default: break
        }
        var count = 1
        for d in t.shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: Int(d))
            count = overflow ? Int.max : p
        }
        let fill = r.pick([TensorBytes.Fill.pattern, .pattern, .pattern, .zeros, .nan, .infinity, .huge, .mixed])
        var data = TensorBytes.make(min(count, Self.maxElements), t.dtype.core ?? dtype, fill: fill, seed: UInt64(r.u8()))
        if twist == 5, !data.isEmpty { data.removeLast() }
        if twist == 6 { data.append(0) }
        t.data = Data(data)
        return t
    }
}
