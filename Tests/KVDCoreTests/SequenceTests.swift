import KVDCore
import Testing

/// Sequence bookkeeping over ordinary memory standing in for the arena (same code path as shm).
@Suite struct SequenceTests {
    static let layout = ModelLayout(name: "t", layers: 2, kvHeads: 2, qHeads: 4, headDim: 2, dtype: .f32, pageTokens: 3, defaultMethod: "x")

    final class Fixture {
        let buffer: UnsafeMutableRawPointer
        let memory: PageMemory
        let allocator: PageAllocator
        init(pages: Int) {
            let g = PageGeometry(pagesOffset: 64, pageBytes: SequenceTests.layout.pageBytesUsed, pageCount: pages)
            buffer = .allocate(byteCount: 64 + pages * g.pageBytes, alignment: 64)
            memory = PageMemory(base: buffer, geometry: g)
            allocator = PageAllocator(pageCount: pages)
        }
        deinit { buffer.deallocate() }
    }

    /// K value for (head, position, dim) — unique, so any misplaced token shows.
    static func k(_ h: Int, _ p: Int, _ d: Int) -> Float { Float(h * 10_000 + p * 10 + d) }
    static func v(_ h: Int, _ p: Int, _ d: Int) -> Float { -k(h, p, d) - 1 }

    /// Inline block [layers, heads, n, dim] for positions start..<start+n.
    static func block(_ f: (Int, Int, Int) -> Float, start: Int, n: Int) -> [Float] {
        var out: [Float] = []
        for h in 0..<layout.headCount { for p in start..<(start + n) { for d in 0..<layout.headDim { out.append(f(h, p, d)) } } }
        return out
    }

    static func append(_ s: KVSequence, _ f: Fixture, start: Int, n: Int) throws {
        let keys = block(k, start: start, n: n)
        let values = block(v, start: start, n: n)
        try keys.withUnsafeBytes { kb in
            try values.withUnsafeBytes { vb in
                _ = try s.append(keys: kb, values: vb, tokens: n, allocator: f.allocator, memory: f.memory)
            }
        }
    }

    /// Reads head h's tokens back through its page table.
    static func read(_ s: KVSequence, _ f: Fixture, head h: Int) -> (keys: [Float], values: [Float]) {
        var keys: [Float] = []
        var values: [Float] = []
        let head = s.heads[h]
        for t in 0..<head.count {
            let page = head.pages[t / layout.pageTokens]
            let slot = t % layout.pageTokens
            for d in 0..<layout.headDim {
                keys.append(f.memory.key(page, slot: slot, layout).load(fromByteOffset: d * 4, as: Float.self))
                values.append(f.memory.value(page, slot: slot, layout).load(fromByteOffset: d * 4, as: Float.self))
            }
        }
        return (keys, values)
    }

    @Test func appendsAcrossPageBoundariesReadBack() throws {
        let f = Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, start: 0, n: 2)
        try Self.append(s, f, start: 2, n: 5)
        try Self.append(s, f, start: 7, n: 1)
        #expect(s.length == 8)
        for h in 0..<Self.layout.headCount {
            #expect(s.heads[h].count == 8)
            #expect(s.heads[h].pages.count == 3)  // ceil(8 / 3)
            #expect(s.heads[h].positions == Array(0..<8))
            let (keys, values) = Self.read(s, f, head: h)
            #expect(keys == (0..<8).flatMap { p in (0..<2).map { Self.k(h, p, $0) } })
            #expect(values == (0..<8).flatMap { p in (0..<2).map { Self.v(h, p, $0) } })
        }
        #expect(f.allocator.usedCount == 12)
    }

    @Test func appendThatDoesNotFitChangesNothing() throws {
        let f = Fixture(pages: 5)  // 4 heads: one page each, then 1 spare
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, start: 0, n: 3)
        let before = s.heads
        #expect(throws: KVDError.self) { try Self.append(s, f, start: 3, n: 1) }  // needs 4 more pages
        #expect(s.heads == before)
        #expect(s.length == 3)
        #expect(f.allocator.freeCount == 1)
    }

    @Test func reserveCommitMatchesInlineAppend() throws {
        let f = Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, start: 0, n: 2)
        let runs = try s.reserve(tokens: 4, id: ReservationID(7), allocator: f.allocator)
        #expect(throws: KVDError.self) { try Self.append(s, f, start: 2, n: 1) }
        // Write positions 2..<5 (3 of the 4 reserved) the way a client would, through the runs.
        for (h, headRuns) in runs.enumerated() {
            var p = 2
            for run in headRuns {
                for i in 0..<run.count {
                    for d in 0..<2 {
                        f.memory.key(run.page, slot: run.slot + i, Self.layout).storeBytes(of: Self.k(h, p, d), toByteOffset: d * 4, as: Float.self)
                        f.memory.value(run.page, slot: run.slot + i, Self.layout).storeBytes(of: Self.v(h, p, d), toByteOffset: d * 4, as: Float.self)
                    }
                    p += 1
                }
            }
            #expect(headRuns.map(\.count) == [1, 3])  // slot 2 of page 0, then a new page
        }
        #expect(throws: KVDError.self) { try s.commit(ReservationID(8), tokens: 3, allocator: f.allocator) }
        #expect(throws: KVDError.self) { try s.commit(ReservationID(7), tokens: 5, allocator: f.allocator) }
        try s.commit(ReservationID(7), tokens: 3, allocator: f.allocator)
        #expect(s.length == 5)
        #expect(f.allocator.usedCount == 8)  // ceil(5/3) = 2 pages × 4 heads
        for h in 0..<4 {
            let (keys, _) = Self.read(s, f, head: h)
            #expect(keys == (0..<5).flatMap { p in (0..<2).map { Self.k(h, p, $0) } })
        }
    }

    @Test func abortRestoresThePages() throws {
        let f = Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, start: 0, n: 3)
        _ = try s.reserve(tokens: 7, id: ReservationID(1), allocator: f.allocator)
        #expect(f.allocator.usedCount == 4 * 4)  // ceil(10/3) = 4 pages per head
        try s.abort(ReservationID(1), allocator: f.allocator)
        #expect(f.allocator.usedCount == 4)
        #expect(s.length == 3)
        #expect(s.reservation == nil)
    }

    @Test func compactionPacksFreesAndBumpsGeneration() throws {
        let f = Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, start: 0, n: 10)  // 4 pages per head
        let kept: [[Int32]] = [[0, 1, 9], [0, 4, 5, 6, 7, 8, 9], [], Array(0..<10)]
        let out = try s.compact(plan: CompactionPlan(kept: kept), method: "test", allocator: f.allocator, memory: f.memory)
        #expect(out.before == [10, 10, 10, 10])
        #expect(out.kept == [3, 7, 0, 10])
        #expect(out.pagesFreed == (4 - 1) + (4 - 3) + 4 + 0)
        #expect(s.generation == 2)
        for h in 0..<4 {
            let (keys, values) = Self.read(s, f, head: h)
            #expect(keys == kept[h].flatMap { p in (0..<2).map { Self.k(h, Int(p), $0) } })
            #expect(values == kept[h].flatMap { p in (0..<2).map { Self.v(h, Int(p), $0) } })
            #expect(s.heads[h].positions == kept[h])
        }
        // The next append continues after the logical length, into partially filled pages.
        try Self.append(s, f, start: 10, n: 2)
        #expect(s.heads[0].positions == [0, 1, 9, 10, 11])
        let (keys, _) = Self.read(s, f, head: 0)
        #expect(keys == [0, 1, 9, 10, 11].flatMap { p in (0..<2).map { Self.k(0, p, $0) } })
    }

    @Test func compactionThatKeepsEverythingKeepsTheGeneration() throws {
        let f = Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, start: 0, n: 4)
        _ = try s.compact(plan: CompactionPlan(kept: Array(repeating: [0, 1, 2, 3], count: 4)), method: "t", allocator: f.allocator, memory: f.memory)
        #expect(s.generation == 1)
    }

    @Test func badPlanLeavesTheSequenceAlone() throws {
        let f = Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, start: 0, n: 4)
        let before = s.heads
        #expect(throws: KVDError.self) {
            try s.compact(plan: CompactionPlan(kept: [[0], [0], [0], [7]]), method: "t", allocator: f.allocator, memory: f.memory)
        }
        #expect(s.heads == before)
    }

    @Test func releaseReturnsEveryPageIncludingAReservation() throws {
        let f = Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, start: 0, n: 5)
        _ = try s.reserve(tokens: 3, id: ReservationID(1), allocator: f.allocator)
        #expect(s.pageCount == 12)  // 2 pages per head for 5 tokens, 1 more each for the reservation
        #expect(s.release(allocator: f.allocator) == 12)
        #expect(f.allocator.freeCount == 64)
        #expect(s.isReleased)
    }
}

@Suite struct AliasTests {
    // 3 layers × 1 KV head, 2 dims, 3 tokens per page.
    static let layout = ModelLayout(name: "a", layers: 3, kvHeads: 1, qHeads: 1, headDim: 2, dtype: .f32, pageTokens: 3, defaultMethod: "x")

    func filled(_ f: SequenceTests.Fixture) throws -> KVSequence {
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        let block = (0..<(3 * 5 * 2)).map { Float($0) }
        try block.withUnsafeBytes { b in _ = try s.append(keys: b, values: b, tokens: 5, allocator: f.allocator, memory: f.memory) }
        return s
    }

    @Test func aliasFreesPagesAndResolvesChains() throws {
        let f = SequenceTests.Fixture(pages: 32)
        let s = try filled(f)
        #expect(f.allocator.usedCount == 6)  // 2 pages × 3 layers
        #expect(try s.applyAliases([1: 0], allocator: f.allocator) == 2)
        #expect(try s.applyAliases([2: 1], allocator: f.allocator) == 2)  // 2 → 1 → 0 resolves to 0
        #expect(s.aliases == [nil, 0, 0])
        #expect(f.allocator.usedCount == 2)
        #expect(s.heads[1].count == 0 && s.heads[2].count == 0)
        #expect(s.generation == 3)
        // Appends ignore aliased layers: only layer 0 grows and takes pages.
        let block = [Float](repeating: 1, count: 3 * 4 * 2)
        try block.withUnsafeBytes { b in _ = try s.append(keys: b, values: b, tokens: 4, allocator: f.allocator, memory: f.memory) }
        #expect(s.heads.map(\.count) == [9, 0, 0])
        #expect(f.allocator.usedCount == 3)
        // Reservations give aliased layers no slots.
        let runs = try s.reserve(tokens: 2, id: ReservationID(1), allocator: f.allocator)
        #expect(runs[1].isEmpty && runs[2].isEmpty && runs[0].map(\.count).reduce(0, +) == 2)
    }

    @Test func badMapsAreRefusedAndChangeNothing() throws {
        let f = SequenceTests.Fixture(pages: 32)
        let s = try filled(f)
        for map in [[3: 0], [1: 1], [0: 2], [1: -1]] {
            #expect(throws: KVDError.self) { try s.applyAliases(map, allocator: f.allocator) }
        }
        _ = try s.applyAliases([2: 0], allocator: f.allocator)
        #expect(throws: KVDError.self) { try s.applyAliases([2: 1], allocator: f.allocator) }  // already aliased elsewhere
        #expect(s.aliases == [nil, nil, 0])
        #expect(f.allocator.usedCount == 4)
    }
}
