import KVDCore
import KVDPluginAPI
import KVDPluginHost
import KVSharer
import Testing

/// Compaction leaves sliding-window layers as they are: the host shows their heads empty to the
/// method (`SequenceView(hidingSlidingLayers:)`), budgets are spread over the full-attention
/// layers only, and `CompactionRunner` keeps every token a sliding head holds, bit for bit.
@Suite struct SlidingLayerCompactionTests {
    /// 4 layers × 2 KV heads; layers 0 and 2 slide by 8 tokens.
    static let layout = ModelLayout(
        name: "sl", layers: 4, kvHeads: 2, qHeads: 4, headDim: 8, dtype: .f32, pageTokens: 4, defaultMethod: "streamingllm",
        layerWindows: [8, 0, 8, 0])

    final class Arena {
        let buffer: UnsafeMutableRawPointer
        let memory: PageMemory
        let allocator: PageAllocator
        init(pages: Int) {
            let g = PageGeometry(pagesOffset: 64, pageBytes: SlidingLayerCompactionTests.layout.pageBytesUsed, pageCount: pages)
            buffer = .allocate(byteCount: 64 + pages * g.pageBytes, alignment: 64)
            memory = PageMemory(base: buffer, geometry: g)
            allocator = PageAllocator(pageCount: pages)
        }
        deinit { buffer.deallocate() }
    }

    /// A sequence of `tokens` random tokens, sliding layers already trimmed to their windows.
    static func sequence(_ a: Arena, tokens: Int, seed: UInt64) throws -> KVSequence {
        var rng = SplitMix(seed: seed)
        let n = layout.headCount * tokens * layout.headDim
        let keys = (0..<n).map { _ in rng.float() }
        let values = (0..<n).map { _ in rng.float() }
        let s = KVSequence(id: SequenceID(seed), layout: layout, tenant: "")
        try keys.withUnsafeBytes { k in
            try values.withUnsafeBytes { v in _ = try s.append(keys: k, values: v, tokens: tokens, allocator: a.allocator, memory: a.memory) }
        }
        s.freeOutOfWindow(allocator: a.allocator)
        return s
    }

    /// K then V bytes of every token head h holds, in order.
    static func bytes(_ s: KVSequence, _ h: Int, _ a: Arena) -> [UInt8] {
        var out: [UInt8] = []
        let head = s.heads[h]
        for t in 0..<head.count {
            let page = head.pages[t / layout.pageTokens], slot = t % layout.pageTokens
            out += UnsafeRawBufferPointer(start: a.memory.key(page, slot: slot, layout), count: layout.tokenBytes)
            out += UnsafeRawBufferPointer(start: a.memory.value(page, slot: slot, layout), count: layout.tokenBytes)
        }
        return out
    }

    static let sliding = [0, 1, 4, 5]
    static let full = [2, 3, 6, 7]

    static func overrides(_ m: any CompactionMethod) -> [(name: String, value: ParamValue)] {
        let names = Set(m.descriptor.params.map(\.name))
        var out: [(name: String, value: ParamValue)] = []
        if names.contains("budget") { out.append(("budget", .int(16))) }
        if names.contains("recent") { out.append(("recent", .int(8))) }
        return out
    }

    @Test(arguments: Catalog.builtinMethods.filter { !["headkv", "kvsharer"].contains($0.descriptor.name) }.map(\.descriptor.name))
    func methodsLeaveSlidingLayersIntact(name: String) throws {
        let method = try #require(Catalog.builtinMethods.first { $0.descriptor.name == name })
        let a = Arena(pages: 600)
        let s = try Self.sequence(a, tokens: 120, seed: 7)
        let before = s.heads
        let bytesBefore = Self.sliding.map { Self.bytes(s, $0, a) }
        let view = SequenceView(layout: Self.layout, heads: s.heads, memory: a.memory, aliases: s.aliases, hidingSlidingLayers: true)
        #expect(view.hidesSlidingLayers && view.windows == [8, 0, 8, 0])
        #expect(Self.sliding.allSatisfy { view.headCounts[$0] == 0 } && Self.full.allSatisfy { view.headCounts[$0] == 120 })
        var rng = SplitMix(seed: 9)
        let w = 4
        let queries = (0..<(Self.layout.layers * Self.layout.qHeads * w * Self.layout.headDim)).map { _ in rng.float() }
        let obs = Observation(layers: 4, qHeads: 4, window: w, headDim: 8, queries: queries)
        let params = try method.descriptor.resolve(Self.overrides(method))
        let ctx = CompactionContext(view: view, observation: obs, params: params, method: name, baseDirectory: "")
        let (planned, outcome) = try CompactionRunner.run(method, ctx, sequence: s, allocator: a.allocator, memory: a.memory)
        for (i, h) in Self.sliding.enumerated() {
            #expect(s.heads[h] == before[h], "\(name): sliding head \(h) changed")
            #expect(Self.bytes(s, h, a) == bytesBefore[i])
            #expect(outcome.kept[h] == outcome.before[h], "kept = before for sliding heads")
            if let b = planned.budgets { #expect(b[h] == 0) }
        }
        #expect(s.pageCount == a.allocator.usedCount)
        // Something happened to the full layers (every method here but DBudgetKV, whose own stop
        // decides, drops tokens of 120 at these settings).
        if name != "dbudgetkv" { #expect(Self.full.contains { s.heads[$0].count < 120 }, "\(name) compacted nothing") }
    }

    @Test func budgetsAverageOverFullLayersOnly() throws {
        let a = Arena(pages: 600)
        let s = try Self.sequence(a, tokens: 60, seed: 3)
        let view = SequenceView(layout: Self.layout, heads: s.heads, memory: a.memory, aliases: s.aliases, hidingSlidingLayers: true)
        let u = UniformAllocator()
        let p = try u.descriptorParams([("fraction", .float(0.5))])
        let ctx = CompactionContext(view: view, observation: nil, params: p, method: "u", baseDirectory: "")
        #expect(BudgetParams.budgetedHeads(ctx) == Self.full)
        #expect(BudgetParams.budgetedLayers(ctx) == [1, 3])
        // 0.5 · 60 = 30 per full head (sliding heads' empty prefixes would have halved it to 15).
        let prefix = view.headCounts
        #expect(BudgetParams.average(ctx, prefix: prefix) == 30)
        #expect(try u.budgets(ctx, prefix: prefix, scores: nil) == [0, 0, 30, 30, 0, 0, 30, 30])
    }

    @Test func kvSharerRefusesAliasesAcrossWindows() throws {
        let a = Arena(pages: 600)
        let s = try Self.sequence(a, tokens: 30, seed: 5)
        let view = SequenceView(layout: Self.layout, heads: s.heads, memory: a.memory, aliases: s.aliases, hidingSlidingLayers: true)
        let m = KVSharer()
        for (map, ok) in [("1:0", false), ("2:1", false), ("3:1", true)] {
            let p = try m.descriptor.resolve([("alias_map", .string(map))])
            let ctx = CompactionContext(view: view, observation: nil, params: p, method: "kvsharer", baseDirectory: "")
            let pages = s.pageCount
            if ok {
                _ = try CompactionRunner.run(m, ctx, sequence: s, allocator: a.allocator, memory: a.memory)
                #expect(s.aliases == [nil, nil, nil, 1])
            } else {
                #expect(throws: KVDError.self) { try CompactionRunner.run(m, ctx, sequence: s, allocator: a.allocator, memory: a.memory) }
                #expect(s.pageCount == pages)
            }
        }
    }
}

extension UniformAllocator {
    func descriptorParams(_ o: [(name: String, value: ParamValue)]) throws -> ResolvedParams {
        try MethodDescriptor(name: "u", description: "", params: params).resolve(o)
    }
}
