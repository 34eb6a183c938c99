import KVDCore
import Testing

/// Positions are int32 while lengths are Int: a sequence stops at 2^31 - 1 tokens with an error
/// (never a trap or a wrapped, negative position), and a head's positions near Int32.max read back.
@Suite struct PositionLimitTests {
    /// One head, 65536 tokens per page: 2^31 tokens are 32768 pages, and Reserve/Commit touch no
    /// page bytes, so the bookkeeping of a 2^31-token sequence fits in a unit test.
    static let layout = ModelLayout(name: "long", layers: 1, kvHeads: 1, qHeads: 1, headDim: 1, dtype: .f16, pageTokens: 65536, defaultMethod: "x")

    static func grow(_ s: KVSequence, by tokens: Int, _ allocator: PageAllocator, id: UInt64) throws {
        _ = try s.reserve(tokens: tokens, id: ReservationID(id), allocator: allocator)
        try s.commit(ReservationID(id), tokens: tokens, allocator: allocator)
    }

    @Test func aSequenceStopsAtInt32MaxTokensWithAnError() throws {
        let allocator = PageAllocator(pageCount: 32769)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try Self.grow(s, by: KVSequence.maxLength - 3, allocator, id: 1)
        try Self.grow(s, by: 2, allocator, id: 2)
        #expect(s.length == Int(Int32.max) - 1)
        // One more token is the last one int32 positions can number (position 2^31 - 2).
        let before = (s.heads, s.generation, allocator.freeCount)
        for tokens in [2, 65536, Int(Int32.max)] {
            #expect(throws: KVDError.invalidArgument(
                "reserve: \(tokens) more tokens would take sequence 1 (length \(Int32.max - 1)) past \(Int32.max) tokens, "
                    + "the most int32 positions allow; start a new sequence")) {
                _ = try s.reserve(tokens: tokens, id: ReservationID(3), allocator: allocator)
            }
        }
        #expect(s.reservation == nil && s.heads == before.0 && s.generation == before.1 && allocator.freeCount == before.2)
        try Self.grow(s, by: 1, allocator, id: 4)
        #expect(s.length == KVSequence.maxLength)
        #expect(s.heads[0].positionRuns == [HeadCache.PositionRun(first: 0, count: Int32.max)])
        #expect(throws: KVDError.self) { _ = try s.reserve(tokens: 1, id: ReservationID(5), allocator: allocator) }
        #expect(s.length == KVSequence.maxLength && s.reservation == nil)
    }

    @Test func growthPastTheLimitIsRefusedBeforeAnyPageIsTaken() throws {
        let allocator = PageAllocator(pageCount: 40000)
        let s = KVSequence(id: SequenceID(2), layout: Self.layout, tenant: "")
        try Self.grow(s, by: 10, allocator, id: 1)
        let free = allocator.freeCount
        #expect(throws: KVDError.self) { _ = try s.reserve(tokens: KVSequence.maxLength - 9, id: ReservationID(2), allocator: allocator) }
        #expect(throws: KVDError.self) { try s.requireRoom(for: Int.max, "append") }
        #expect(throws: KVDError.self) { try s.requireRoom(for: -1, "append") }
        #expect(allocator.freeCount == free && s.length == 10)
        try s.requireRoom(for: KVSequence.maxLength - 10, "append")
    }

    @Test func positionsEndingAtInt32MaxReadBack() {
        let last: [Int32] = [Int32.max - 2, Int32.max - 1, Int32.max]
        var h = HeadCache()
        h.extend(first: Int32.max - 2, tokens: 3)  // one run whose first + count is 2^31
        var g = HeadCache()
        g.count = 4
        g.set(positions: [7] + last, logWeights: nil)
        for (cache, want) in [(h, last), (g, [7] + last)] {
            #expect(cache.positions == want)
            let bytes = UnsafeMutableRawPointer.allocate(byteCount: 4 * want.count, alignment: 4)
            defer { bytes.deallocate() }
            cache.writePositions(to: bytes)
            #expect((0..<want.count).map { Int32(littleEndian: bytes.load(fromByteOffset: 4 * $0, as: Int32.self)) } == want)
        }
    }

    @Test func positionsAtIndicesMatchTheFullArray() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<200 {
            var h = HeadCache()
            var positions: [Int32] = []
            var p = Int32(rng.next() % 5)
            for _ in 0..<Int(rng.next() % 40) {
                positions.append(p)
                p += Int32(rng.next() % 3 == 0 ? 2 + rng.next() % 4 : 1)
            }
            h.count = positions.count
            h.set(positions: positions, logWeights: nil)
            let indices = positions.indices.filter { _ in rng.next() % 3 == 0 }.map(Int32.init)
            #expect(h.positions(at: indices) == indices.map { positions[Int($0)] })
        }
        var big = HeadCache()
        big.extend(first: 0, tokens: Int(Int32.max) - 1)
        big.extend(first: Int32.max - 1, tokens: 1)
        #expect(big.positions(at: [0, 5, Int32.max - 2, Int32.max - 1]) == [0, 5, Int32.max - 2, Int32.max - 1])
    }

    @Test func aRunWhoseCountWouldOverflowStartsANewRun() {
        var h = HeadCache()
        h.extend(first: 0, tokens: Int(Int32.max))
        h.extend(first: Int32.max, tokens: 1)
        #expect(h.positionRuns == [HeadCache.PositionRun(first: 0, count: Int32.max), HeadCache.PositionRun(first: Int32.max, count: 1)])
        #expect(h.count == Int(Int32.max) + 1)
    }
}
