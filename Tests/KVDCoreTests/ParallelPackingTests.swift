import KVDCore
import Testing

/// Compaction packing on several threads (taken when more than 8 MiB moves) must leave every head
/// exactly as packing on one thread does: the kept tokens' K and V at the front, in order.
@Suite struct ParallelPackingTests {
    static let layout = ModelLayout(name: "p", layers: 2, kvHeads: 4, qHeads: 4, headDim: 64, dtype: .f32, pageTokens: 16, defaultMethod: "x")
    static let tokens = 8192

    /// K of (head, position, dim); V is its negation minus one. Unique, so a misplaced token shows.
    static func key(_ h: Int, _ p: Int, _ d: Int) -> Float { Float(h * 1_000_000 + p * 100 + d) }

    final class Arena {
        let buffer: UnsafeMutableRawPointer
        let memory: PageMemory
        let allocator: PageAllocator
        init() {
            let pages = ParallelPackingTests.layout.headCount * ParallelPackingTests.tokens / ParallelPackingTests.layout.pageTokens
            let g = PageGeometry(pagesOffset: 0, pageBytes: ParallelPackingTests.layout.pageBytesUsed, pageCount: pages)
            buffer = .allocate(byteCount: pages * g.pageBytes, alignment: 64)
            memory = PageMemory(base: buffer, geometry: g)
            allocator = PageAllocator(pageCount: pages)
        }
        deinit { buffer.deallocate() }
    }

    static func filled(_ a: Arena) throws -> KVSequence {
        let m = layout, n = tokens, d = m.headDim
        let count = m.headCount * n * d
        let keys = [Float](unsafeUninitializedCapacity: count) { out, initialized in
            for h in 0..<m.headCount { for p in 0..<n { for c in 0..<d { out[(h * n + p) * d + c] = key(h, p, c) } } }
            initialized = count
        }
        let values = keys.map { -$0 - 1 }
        let s = KVSequence(id: SequenceID(1), layout: m, tenant: "t")
        try keys.withUnsafeBytes { kb in
            try values.withUnsafeBytes { vb in
                _ = try s.append(keys: kb, values: vb, tokens: n, allocator: a.allocator, memory: a.memory)
            }
        }
        return s
    }

    /// Head h's token t as (first key element, first value element), read from its pages.
    static func token(_ s: KVSequence, _ a: Arena, head h: Int, _ t: Int) -> (Float, Float) {
        let page = s.heads[h].pages[t / layout.pageTokens]
        let slot = t % layout.pageTokens
        return (a.memory.key(page, slot: slot, layout).load(as: Float.self), a.memory.value(page, slot: slot, layout).load(as: Float.self))
    }

    @Test func parallelPackingMatchesTheKeptTokens() throws {
        // Every head keeps a different scattered half: ~2 MiB moved per head, 16 MiB in all.
        let kept: [[Int32]] = (0..<Self.layout.headCount).map { h in
            (0..<Int32(Self.tokens)).filter { ($0 &* 7 &+ Int32(h)) % 2 == 1 || $0 < 3 }
        }
        let one = Arena(), many = Arena()
        let a = try Self.filled(one), b = try Self.filled(many)
        let outA = try a.compact(plan: CompactionPlan(kept: kept), method: "t", allocator: one.allocator, memory: one.memory, threads: 1)
        let outB = try b.compact(plan: CompactionPlan(kept: kept), method: "t", allocator: many.allocator, memory: many.memory, threads: 4)
        #expect(outA.pagesFreed == outB.pagesFreed && outA.kept == outB.kept)
        for h in 0..<Self.layout.headCount {
            #expect(b.heads[h].count == kept[h].count && b.heads[h].positions == kept[h])
            for (t, p) in kept[h].enumerated() {
                let want = Self.key(h, Int(p), 0)
                let (k1, v1) = Self.token(a, one, head: h, t)
                let (k2, v2) = Self.token(b, many, head: h, t)
                guard k1 == want, v1 == -want - 1, k2 == want, v2 == -want - 1 else {
                    Issue.record("head \(h) token \(t) (position \(p)): 1 thread \(k1)/\(v1), 4 threads \(k2)/\(v2), want \(want)")
                    return
                }
            }
        }
    }
}
