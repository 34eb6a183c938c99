import KVDCore
import Testing

/// Sliding-window frees (`ModelLayout.layerWindows`): after every append or commit a sliding
/// layer's heads hold exactly the pages from the one holding position L - W to the end. Every
/// expectation is recomputed here from the rule written out per page (`expectedFirst`), not from
/// `SlidingWindow.cutoff`.
@Suite struct SlidingWindowTests {
    /// 4 layers × 2 KV heads, 4 tokens a page; layer 0 slides by 8 (two pages), layer 2 by 6 (not a
    /// page multiple), layers 1 and 3 are full.
    static let layout = ModelLayout(
        name: "sw", layers: 4, kvHeads: 2, qHeads: 4, headDim: 2, dtype: .f32, pageTokens: 4, defaultMethod: "x",
        layerWindows: [8, 0, 6, 0])

    /// Ordinary memory standing in for the arena, sized for `layout`'s pages.
    final class Fixture {
        let buffer: UnsafeMutableRawPointer
        let memory: PageMemory
        let allocator: PageAllocator
        init(pages: Int) {
            let g = PageGeometry(pagesOffset: 64, pageBytes: SlidingWindowTests.layout.pageBytesUsed, pageCount: pages)
            buffer = .allocate(byteCount: 64 + pages * g.pageBytes, alignment: 64)
            memory = PageMemory(base: buffer, geometry: g)
            allocator = PageAllocator(pageCount: pages)
        }
        deinit { buffer.deallocate() }
    }

    static func k(_ h: Int, _ p: Int, _ d: Int) -> Float { Float(h * 10_000 + p * 10 + d) }

    /// First position head h still holds at length L: the start of the first page that has a
    /// token at a position >= L - W (pages cover positions i*P ..< (i+1)*P of the sequence).
    static func expectedFirst(_ h: Int, length L: Int) -> Int {
        let w = layout.layerWindows[h / layout.kvHeads]
        guard w > 0 else { return 0 }
        var page = 0
        while (page + 1) * layout.pageTokens <= L - w { page += 1 }  // every token of `page` is below L - W
        return page * layout.pageTokens
    }

    static func append(_ s: KVSequence, _ f: Fixture, n: Int) throws {
        var keys: [Float] = []
        for h in 0..<layout.headCount { for p in s.length..<(s.length + n) { for d in 0..<layout.headDim { keys.append(k(h, p, d)) } } }
        let values = keys.map { -$0 - 1 }
        try keys.withUnsafeBytes { kb in
            try values.withUnsafeBytes { vb in
                _ = try s.append(keys: kb, values: vb, tokens: n, allocator: f.allocator, memory: f.memory)
            }
        }
    }

    /// Positions, page counts and every retained K/V value of every head, against the rule.
    static func checkHeads(_ s: KVSequence, _ f: Fixture) {
        let P = layout.pageTokens
        for h in 0..<layout.headCount {
            let first = expectedFirst(h, length: s.length)
            let head = s.heads[h]
            #expect(head.positions == (first..<s.length).map { Int32($0) }, "head \(h) at length \(s.length)")
            #expect(head.pages.count == (s.length - first + P - 1) / P)
            for (t, pos) in (first..<s.length).enumerated() {
                let kp = f.memory.key(head.pages[t / P], slot: t % P, layout).assumingMemoryBound(to: Float.self)
                let vp = f.memory.value(head.pages[t / P], slot: t % P, layout).assumingMemoryBound(to: Float.self)
                for d in 0..<layout.headDim {
                    #expect(kp[d] == k(h, pos, d) && vp[d] == -k(h, pos, d) - 1)
                }
            }
        }
    }

    @Test func cutoffAtPageBoundaries() {
        #expect(SlidingWindow.cutoff(length: 0, window: 8) == 0)
        #expect(SlidingWindow.cutoff(length: 8, window: 8) == 0)
        #expect(SlidingWindow.cutoff(length: 9, window: 8) == 1)
        #expect(SlidingWindow.cutoff(length: 100, window: 0) == 0)
        #expect(SlidingWindow.cutoff(length: Int(Int32.max), window: 1 << 24) == Int(Int32.max) - (1 << 24))
        // ceil(W/P) + 1: W = 512, P = 16 → 33; W = 6, P = 4 → 3.
        #expect(SlidingWindow.maxPages(window: 512, pageTokens: 16) == 33)
        #expect(SlidingWindow.maxPages(window: 6, pageTokens: 4) == 3)
        // A head drops page i only once all of it is below the cutoff: at L = 12, W = 8 the cutoff
        // is 4, so page 0 (positions 0..<4) goes; at L = 11 (cutoff 3) it stays.
        for (L, first) in [(11, 0), (12, 4), (15, 4), (16, 8)] { #expect(Self.expectedFirst(0, length: L) == first) }
    }

    @Test(arguments: [1, 3, 4, 5, 37])
    func appendsFreeOutOfWindowPages(step: Int) throws {
        let f = Fixture(pages: 400)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        var released = 0
        while s.length < 120 {
            try Self.append(s, f, n: step)
            released += s.freeOutOfWindow(allocator: f.allocator).released
            Self.checkHeads(s, f)
            #expect(f.allocator.usedCount == s.pageCount)
            // The generation is untouched: which positions a sliding layer holds follows from the length.
            #expect(s.generation == 1)
            for h in 0..<Self.layout.headCount where Self.layout.layerWindows[h / 2] > 0 {
                #expect(s.heads[h].pages.count <= SlidingWindow.maxPages(window: Self.layout.layerWindows[h / 2], pageTokens: 4))
            }
        }
        // Released pages: per sliding head, the pages wholly below the final cutoff.
        let expected = (0..<Self.layout.headCount).reduce(0) { $0 + Self.expectedFirst($1, length: s.length) / 4 }
        #expect(released == expected)
    }

    @Test func freeingTwiceChangesNothing() throws {
        let f = Fixture(pages: 100)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, n: 30)
        #expect(s.freeOutOfWindow(allocator: f.allocator).released > 0)
        #expect(s.freeOutOfWindow(allocator: f.allocator) == KVSequence.WindowFree())
    }

    @Test func noWindowsFreeNothing() throws {
        let full = ModelLayout(name: "f", layers: 4, kvHeads: 2, qHeads: 4, headDim: 2, dtype: .f32, pageTokens: 4, defaultMethod: "x")
        let f = Fixture(pages: 200)
        let s = KVSequence(id: SequenceID(1), layout: full, tenant: "")
        var keys = [Float](repeating: 1, count: full.headCount * 50 * 2)
        keys.withUnsafeMutableBytes { kb in _ = try? s.append(keys: UnsafeRawBufferPointer(kb), values: UnsafeRawBufferPointer(kb), tokens: 50, allocator: f.allocator, memory: f.memory) }
        #expect(s.freeOutOfWindow(allocator: f.allocator) == KVSequence.WindowFree())
        #expect(s.heads.allSatisfy { $0.count == 50 })
    }

    @Test func keepReservedCommitsFreeAsTheyGo() throws {
        let f = Fixture(pages: 200)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        let runs = try s.reserve(tokens: 40, id: ReservationID(7), allocator: f.allocator)
        // The client writes every reserved token (position = index) into its slots.
        for h in 0..<Self.layout.headCount {
            var pos = 0
            for r in runs[h] {
                for i in 0..<r.count {
                    let kp = f.memory.key(r.page, slot: r.slot + i, Self.layout).assumingMemoryBound(to: Float.self)
                    let vp = f.memory.value(r.page, slot: r.slot + i, Self.layout).assumingMemoryBound(to: Float.self)
                    for d in 0..<2 { kp[d] = Self.k(h, pos, d); vp[d] = -Self.k(h, pos, d) - 1 }
                    pos += 1
                }
            }
        }
        for n in [5, 4, 11, 20] {
            try s.commit(ReservationID(7), tokens: n, keepReserved: true, allocator: f.allocator)
            s.freeOutOfWindow(allocator: f.allocator)
            Self.checkHeads(s, f)
            #expect(f.allocator.usedCount == s.pageCount)
        }
        #expect(s.reservation == nil && s.length == 40)
    }

    @Test func forkSharesOnlyWhatItsWindowNeeds() throws {
        let f = Fixture(pages: 200)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.append(s, f, n: 20)
        s.freeOutOfWindow(allocator: f.allocator)  // layer 0 keeps 12..<20, layer 2 12..<20
        // A fork of 22 (> length) is refused, 18 needs layer 0 from position 8 (page 2), dropped.
        #expect(throws: KVDError.self) { try s.fork(length: 18, newID: SequenceID(2), allocator: f.allocator, memory: f.memory) }
        let fork = try s.fork(length: 20, newID: SequenceID(2), allocator: f.allocator, memory: f.memory)
        Self.checkHeads(fork, f)
        // Shared by reference: every page of the fork is the source's (20 is a page multiple).
        for h in 0..<Self.layout.headCount {
            #expect(fork.heads[h].pages == s.heads[h].pages)
            #expect(f.allocator.refCounts(of: fork.heads[h].pages).allSatisfy { $0 == 2 })
        }
        // Appending to the source drops pages the fork still holds: one holder less, none freed.
        try Self.append(s, f, n: 8)
        let freed = s.freeOutOfWindow(allocator: f.allocator)
        // Layer 0 (cutoff 20) and layer 2 (cutoff 22) drop pages 3 and 4 in both heads: 8 releases,
        // all of pages the fork holds.
        let expected = (0..<Self.layout.headCount).reduce(0) { $0 + (Self.expectedFirst($1, length: 28) - Self.expectedFirst($1, length: 20)) / 4 }
        #expect(expected == 8 && freed.released == expected && freed.freed == 0)
        Self.checkHeads(fork, f)
        Self.checkHeads(s, f)
        #expect(f.allocator.usedCount == Set(s.heads.flatMap(\.pages) + fork.heads.flatMap(\.pages)).count)
    }

    @Test func adoptTakesOnlyTheWindowsPages() throws {
        let f = Fixture(pages: 200)
        let P = 4, blocks = 5
        let pages = try (0..<Self.layout.headCount).map { _ in try f.allocator.allocate(blocks) }
        let s = try KVSequence.adopt(id: SequenceID(3), layout: Self.layout, tenant: "", pages: pages, tokens: blocks * P, allocator: f.allocator)
        for h in 0..<Self.layout.headCount {
            let first = Self.expectedFirst(h, length: 20)
            #expect(s.heads[h].positions == (first..<20).map { Int32($0) })
            #expect(s.heads[h].pages == Array(pages[h].dropFirst(first / P)))
            // The index's holder plus the adopter's on the pages it took, the index's only on the rest.
            #expect(f.allocator.refCounts(of: pages[h]) == pages[h].indices.map { $0 >= first / P ? 2 : 1 })
        }
    }

    @Test func replayDropsTheSamePages() throws {
        let f = Fixture(pages: 200)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        var image = SequenceImage(id: 1, layout: Self.layout)
        for n in [3, 9, 1, 16, 2] {
            let before = s.heads.map(\.pages.count)
            try Self.append(s, f, n: n)
            let added = s.pagesAdded(since: before)
            s.freeOutOfWindow(allocator: f.allocator)
            try image.append(tokens: n, newPages: added, layout: Self.layout, pageCount: 200)
            #expect(image == s.image(pinned: false))
            try image.validate(Self.layout, pageCount: 200)
        }
    }

    @Test func aliasesOnlyBetweenEqualWindows() throws {
        let f = Fixture(pages: 100)
        let layout = ModelLayout(name: "a", layers: 4, kvHeads: 2, qHeads: 4, headDim: 2, dtype: .f32, pageTokens: 4, defaultMethod: "x",
                                 layerWindows: [8, 0, 8, 0])
        let s = KVSequence(id: SequenceID(1), layout: layout, tenant: "")
        #expect(throws: KVDError.self) { try s.resolveAliases([1: 0]) }  // full reads sliding
        #expect(throws: KVDError.self) { try s.resolveAliases([2: 1]) }  // sliding reads full
        #expect(try s.resolveAliases([2: 0, 3: 1]) == [nil, nil, 0, 1])
        _ = f
    }

    @Test func layoutValidation() {
        func layout(_ w: [Int], layers: Int = 4) -> ModelLayout {
            ModelLayout(name: "v", layers: layers, kvHeads: 1, qHeads: 1, headDim: 2, dtype: .f16, pageTokens: 4, defaultMethod: "x", layerWindows: w)
        }
        #expect(layout([]).validationProblem() == nil)
        #expect(layout([8, 0, 8, 0]).validationProblem() == nil)
        #expect(layout([1 << 24, 0, 1, 0]).validationProblem() == nil)
        #expect(layout([8, 0, 8]).validationProblem()?.hasPrefix("layer_windows: has 3 entries for 4 layers") == true)
        #expect(layout([8, 0, 8, 0, 0]).validationProblem() != nil)
        #expect(layout([8, -1, 8, 0]).validationProblem()?.contains("entry 1") == true)
        #expect(layout([8, 0, (1 << 24) + 1, 0]).validationProblem()?.contains("entry 2") == true)
        #expect(layout([Int.max, 0, 0, 0]).validationProblem() != nil)
    }
}
