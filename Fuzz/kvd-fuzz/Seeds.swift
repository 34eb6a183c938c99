import Foundation
import KVDCore
import KVDProtocol

/// The seed corpus (Fuzz/corpus): one valid request of each kind in raw mode, the two-request
/// flows (Reserve + Commit, Stage + Compact with queries_shm) in multi-frame mode, and a program
/// touching every op. Each seed is run before it is written, and every reply must be a success.
enum Seeds {
    static func write(to directory: String) throws -> Int {
        let harness = makeHarness()
        defer { harness.close() }
        let seeds = all(harness)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, bytes) in seeds {
            harness.run(bytes)
            for reply in harness.session.replies {
                if case .error(let e) = reply.body { fatalError("seed \(name) is not valid: \(e.code) \(e.message)") }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + name))
        }
        return seeds.count
    }

    private static func all(_ h: Harness) -> [(String, [UInt8])] {
        let pg = Harness.playground
        let m = h.tiny
        var seeds: [(String, [UInt8])] = [
            ("hello", raw(.hello(.with { $0.protocolVersions = [1]; $0.clientName = "seed" }))),
            ("create-sequence", raw(.createSequence(.with { $0.model = m.name; $0.tenant = "seed" }))),
            ("append-inline", raw(.append(.with {
                $0.sequenceID = pg
                $0.keys = TensorBytes.kv(m, tokens: 2, seed: 1)
                $0.values = TensorBytes.kv(m, tokens: 2, seed: 2)
            }))),
            ("reserve", raw(.reserve(.with { $0.sequenceID = pg; $0.numTokens = 3; $0.slots = true }))),
            ("query-pages", raw(.query(.with { $0.sequenceID = pg; $0.mode = .pages; $0.pageRefs = true }))),
            ("query-inline", raw(.query(.with { $0.sequenceID = pg; $0.mode = .inline; $0.layers = [1] }))),
            ("query-gather", raw(.query(.with { $0.sequenceID = pg; $0.mode = .gather }))),
            ("query-metadata-victim", raw(.query(.with { $0.sequenceID = Harness.victim; $0.mode = .metadata }))),
            ("compact-snapkv-inline-queries", raw(.compact(.with {
                $0.sequenceID = pg
                $0.method = "snapkv"
                $0.params = [param("budget", 2)]
                $0.queries = queries(m, window: 2, .f16)
            }))),
            ("compact-balancekv", raw(.compact(.with {
                $0.sequenceID = pg
                $0.method = "balancekv"
                $0.params = [param("sinks", 1), param("recent", 1), param("block", 2)]
            }))),
            ("compact-kvsharer", raw(.compact(.with {
                $0.sequenceID = pg
                $0.method = "kvsharer"
                $0.params = [.with { $0.name = "alias_map"; $0.stringValue = "1:0" }]
            }))),
            ("compact-policy-composed", raw(.compact(.with { $0.sequenceID = pg; $0.policy = "composed" }))),
            ("compact-policy-calibrated-headkv", raw(.compact(.with {
                $0.sequenceID = pg
                $0.policy = "calibrated"
                $0.queries = queries(m, window: 1, .f32)
            }))),
            ("compact-headkv-query-head-scores", raw(.compact(.with {
                $0.sequenceID = pg
                $0.method = "headkv"
                $0.params = [param("budget", 1), .with { $0.name = "scores"; $0.stringValue = "scores-q.json" },
                             .with { $0.name = "aggregate"; $0.stringValue = "max" }]
                $0.queries = queries(m, window: 2, .f16)
            }))),
            ("release", raw(.release(.with { $0.sequenceID = pg }))),
            ("stats-arena", raw(.stats(Kvd_V1_StatsRequest()))),
            ("stats-sequence", raw(.stats(.with { $0.sequenceID = pg }))),
            ("stage", raw(.stage(.with { $0.sequenceID = pg; $0.bytes = 4096 }))),
            ("rank-layers", raw(.rankLayers(.with { $0.sequenceIds = [pg, Harness.victim] }))),
            ("list-sequences", raw(.listSequences(Kvd_V1_ListSequencesRequest()))),
            ("list-policies", raw(.listPolicies(Kvd_V1_ListPoliciesRequest()))),
            ("reload", raw(.reload(Kvd_V1_ReloadRequest()))),
            ("evict", raw(.evict(.with { $0.sequenceID = pg }))),
            ("frames-reserve-commit", frames([
                .reserve(.with { $0.sequenceID = pg; $0.numTokens = 3 }),
                .commit(.with { $0.sequenceID = pg; $0.reservationID = 1; $0.numTokens = 2 }),
            ])),
            // A reservation committed in pieces (keep_reserved), the last piece closing it.
            ("frames-reserve-commit-keep-reserved", frames([
                .reserve(.with { $0.sequenceID = pg; $0.numTokens = 4 }),
                .commit(.with { $0.sequenceID = pg; $0.reservationID = 1; $0.numTokens = 1; $0.keepReserved = true }),
                .commit(.with { $0.sequenceID = pg; $0.reservationID = 1; $0.numTokens = 2; $0.keepReserved = true }),
                .commit(.with { $0.sequenceID = pg; $0.reservationID = 1; $0.numTokens = 1; $0.keepReserved = true }),
            ])),
        ]
        // The second model: create, append, compact by its default policy (layer 1 shares layer
        // 0's cache), query the aliased layers.
        let f32 = h.models["tiny-f32"]!
        seeds.append(("frames-tiny-f32-default-policy-aliases", frames([
            .createSequence(.with { $0.model = f32.name; $0.sequenceID = 5 }),
            .append(.with {
                $0.sequenceID = 5
                $0.keys = TensorBytes.kv(f32, tokens: 5, seed: 4)
                $0.values = TensorBytes.kv(f32, tokens: 5, seed: 5)
            }),
            .compact(.with { $0.sequenceID = 5 }),
            .query(.with { $0.sequenceID = 5; $0.mode = .inline }),
        ])))
        // Stage, then Compact reading the window queries from the staging buffer. The buffer is
        // the first staging allocation after the harness's reset, at the start of the staging area.
        for (method, dtype) in [("streamingllm", DType.f16), ("snapkv", .f32)] {
            seeds.append(("frames-stage-compact-shm-\(method)", frames([
                .stage(.with { $0.sequenceID = pg; $0.bytes = 4096 }),
                .compact(.with {
                    $0.sequenceID = pg
                    $0.method = method
                    $0.params = method == "snapkv" ? [param("budget", 2)] : [param("sinks", 1), param("recent", 2)]
                    $0.queriesShm = .with {
                        $0.dtype = Kvd_V1_DType(dtype)
                        $0.shape = [UInt32(m.layers), UInt32(m.qHeads), 1, UInt32(m.headDim)]
                        $0.offset = h.stagingOffset
                    }
                }),
            ])))
        }
        // Program mode: a record of zeros is the op's first choices, all valid on the playground.
        func record(_ op: Harness.Op, _ choices: [UInt8] = []) -> [UInt8] {
            [UInt8(op.rawValue)] + choices + [UInt8](repeating: 0, count: Harness.recordBytes - 1 - choices.count)
        }
        let order: [Harness.Op] = [
            .hello, .create, .append, .reserve, .commit, .query, .stage, .compact, .stats, .rankLayers, .listSequences, .listPolicies,
            .reload, .release, .create,
        ]
        // Evict the sequence just created (choice 5: the last one the input created).
        seeds.append(("program-every-op", [2] + order.flatMap { record($0) } + record(.evict, [5])))
        // Zero-copy: Reserve 3, write K/V into the slots, Commit 2, read them back inline.
        seeds.append(("program-zero-copy", [2] + record(.reserve) + record(.writeReserved, [0, 9]) + record(.commit) + record(.query, [0, 2])))
        // Journal mode: a sequence's life as a restart reads it (every record applies).
        let heads = m.headCount
        let block = PrefixHash(lo: 7, hi: 7)
        let journal: [JournalRecord] = [
            .put(SequenceImage(id: 5, layout: m)),
            .append(id: 5, tokens: 6, newPages: (0..<heads).map { h in [PageID(UInt32(2 * h)), PageID(UInt32(2 * h + 1))] }),
            .pin(id: 5, pinned: true),
            .prefixInsert(hash: block, parent: .root, pages: (0..<heads).map { PageID(UInt32(2 * $0)) }),
            .prefixEvict(hash: block),
            .release(id: 5),
        ]
        // Blob mode: a 6-token sequence of the tiny model as the remote tier stores it.
        let blobImage = SequenceImage(
            id: 5, model: m.name, length: 6, aliases: Array(repeating: nil, count: m.layers),
            heads: (0..<heads).map { _ in HeadCache(pages: [], count: 6, positionRuns: [.init(first: 0, count: 6)], logWeights: nil) })
        let kv = (0..<heads).map { h in (0..<(6 * m.tokenBytes)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ h) } }
        seeds.append(("blob-sequence", [4, 31] + SequenceBlob(layout: m, image: blobImage, keys: kv, values: kv).encoded()))
        seeds.append(("journal-records", [3] + journal.flatMap { r -> [UInt8] in
            let b = r.encoded
            return [UInt8(b.count & 0xFF), UInt8(b.count >> 8)] + b
        }))
        return seeds
    }

    /// Raw mode (first byte 0): the serialized request as the frame.
    private static func raw(_ body: Kvd_V1_Request.OneOf_Body) -> [UInt8] { [0] + encode(body, id: 1) }

    /// Multi-frame mode (first byte 1): requests separated by FrameSplitter's separator.
    private static func frames(_ bodies: [Kvd_V1_Request.OneOf_Body]) -> [UInt8] {
        [1] + FrameSplitter.join(bodies.enumerated().map { encode($1, id: UInt64($0 + 1)) })
    }

    private static func encode(_ body: Kvd_V1_Request.OneOf_Body, id: UInt64) -> [UInt8] {
        let request = Kvd_V1_Request.with {
            $0.requestID = id
            $0.body = body
        }
        guard let bytes: [UInt8] = try? request.serializedBytes() else { fatalError("cannot encode a seed") }
        return bytes
    }

    private static func param(_ name: String, _ value: Int64) -> Kvd_V1_Param {
        .with {
            $0.name = name
            $0.intValue = value
        }
    }

    private static func queries(_ m: ModelLayout, window: Int, _ dtype: DType) -> Kvd_V1_Tensor {
        var t = Kvd_V1_Tensor()
        t.dtype = Kvd_V1_DType(dtype)
        t.shape = [UInt32(m.layers), UInt32(m.qHeads), UInt32(window), UInt32(m.headDim)]
        t.data = Data(TensorBytes.make(m.layers * m.qHeads * window * m.headDim, dtype, seed: 3))
        return t
    }
}
