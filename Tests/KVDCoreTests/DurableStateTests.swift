import KVDCore
import Testing

/// Journal records and the state they rebuild: every record survives encoding bit-exact, a torn
/// or corrupt record is an error (never a trap), replaying a history gives the live state, a
/// snapshot replays to the same state, and records that do not fit the state are refused.
@Suite struct DurableStateTests {
    static let layout = ModelLayout(name: "m", layers: 2, kvHeads: 2, qHeads: 4, headDim: 2, dtype: .f32, pageTokens: 4, defaultMethod: "x")
    let heads = DurableStateTests.layout.headCount

    func pages(_ from: UInt32, _ n: Int) -> [PageID] { (0..<UInt32(n)).map { PageID(from + $0) } }

    /// A compacted image: per-head counts differ, positions have gaps, log-weights on one head,
    /// layer 1 aliased to layer 0.
    func compacted(id: UInt64) -> SequenceImage {
        let h0 = HeadCache(pages: pages(10, 2), count: 6, positionRuns: [.init(first: 0, count: 2), .init(first: 7, count: 4)],
                           logWeights: [0, 0.5, -1.25, 0, 0, 3])
        let h1 = HeadCache(pages: pages(12, 1), count: 3, positionRuns: [.init(first: 8, count: 3)], logWeights: nil)
        return SequenceImage(id: id, model: "m", generation: 3, length: 11, everCompacted: true, pinned: true,
                             aliases: [nil, 0], heads: [h0, h1, HeadCache(), HeadCache()])
    }

    func records() -> [JournalRecord] {
        [
            .put(SequenceImage(id: 7, layout: Self.layout)),
            .append(id: 7, tokens: 5, newPages: (0..<heads).map { pages(UInt32($0 * 2), 2) }),
            .pin(id: 7, pinned: true),
            .prefixInsert(hash: PrefixHash(lo: 1, hi: 2), parent: .root, pages: (0..<heads).map { PageID(UInt32($0 * 2)) }),
            .put(compacted(id: 9)),
            .prefixEvict(hash: PrefixHash(lo: 1, hi: 2)),
            .release(id: 7),
        ]
    }

    func decode(_ bytes: [UInt8]) throws(DurableFormatError) -> JournalRecord {
        var r = ByteReader(bytes)
        return try JournalRecord.decode(&r)
    }

    @Test func everyRecordRoundTrips() throws {
        for record in records() {
            #expect(try decode(record.encoded) == record)
        }
    }

    @Test func tornAndCorruptRecordsAreErrorsNotTraps() throws {
        var rng = SplitMix64(seed: 42)
        for record in records() {
            let bytes = record.encoded
            // Every strict prefix is torn: an error, whatever the cut.
            for cut in 0..<bytes.count {
                #expect(throws: DurableFormatError.self) { try decode(Array(bytes.prefix(cut))) }
            }
            // Trailing garbage is refused too.
            #expect(throws: DurableFormatError.self) { try decode(bytes + [0]) }
            // Random flips may decode to another valid record, but never trap.
            for _ in 0..<200 {
                var b = bytes
                b[Int(rng.next() % UInt64(b.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
                _ = try? decode(b)
            }
        }
        // A huge count in a tiny record is refused before anything is allocated.
        var w = ByteWriter()
        w.u8(2); w.u64(1); w.u32(5); w.u32(UInt32.max)
        #expect(throws: DurableFormatError.self) { try decode(w.bytes) }
    }

    @Test func replayRebuildsTheLiveStateAndItsReferenceCounts() throws {
        var s = DurableState(layouts: [Self.layout], pageCount: 64)
        for r in records() { try s.apply(r) }
        #expect(s.sequences.keys.sorted() == [9])
        #expect(s.sequences[9] == compacted(id: 9))
        #expect(s.blocks.isEmpty)
        let refs = try s.holders()
        #expect(refs.reduce(0, +) == 3)
        #expect([10, 11, 12].allSatisfy { refs[$0] == 1 })
    }

    @Test func appendsExtendPositionsFromTheLogicalLength() throws {
        var s = DurableState(layouts: [Self.layout], pageCount: 64)
        try s.apply(.put(SequenceImage(id: 1, layout: Self.layout)))
        try s.apply(.append(id: 1, tokens: 3, newPages: (0..<heads).map { [PageID(UInt32($0))] }))
        try s.apply(.append(id: 1, tokens: 2, newPages: (0..<heads).map { [PageID(UInt32(10 + $0))] }))
        let img = try #require(s.sequences[1])
        #expect(img.length == 5)
        for h in 0..<heads {
            #expect(img.heads[h].positions == [0, 1, 2, 3, 4])
            #expect(img.heads[h].pages == [PageID(UInt32(h)), PageID(UInt32(10 + h))])
        }
    }

    @Test func snapshotReplaysToTheSameState() throws {
        var s = DurableState(layouts: [Self.layout], pageCount: 64)
        try s.apply(.put(compacted(id: 9)))
        try s.apply(.put(SequenceImage(id: 3, layout: Self.layout)))
        try s.apply(.append(id: 3, tokens: 8, newPages: (0..<heads).map { pages(UInt32(20 + $0 * 2), 2) }))
        let a = PrefixHash(lo: 1, hi: 1), b = PrefixHash(lo: 2, hi: 0), c = PrefixHash(lo: 0, hi: 9)
        try s.apply(.prefixInsert(hash: a, parent: .root, pages: (0..<heads).map { PageID(UInt32(20 + $0 * 2)) }))
        try s.apply(.prefixInsert(hash: b, parent: a, pages: (0..<heads).map { PageID(UInt32(21 + $0 * 2)) }))
        try s.apply(.prefixInsert(hash: c, parent: b, pages: pages(40, heads)))
        var t = DurableState(layouts: [Self.layout], pageCount: 64)
        for r in s.snapshot() { try t.apply(decode(r.encoded)) }
        #expect(t.sequences == s.sequences && t.blocks == s.blocks)
        #expect(try t.holders() == s.holders())
        #expect(try s.holders()[20] == 2)  // the sequence and block a
    }

    @Test func recordsThatDoNotFitTheStateAreRefused() throws {
        var s = DurableState(layouts: [Self.layout], pageCount: 16)
        #expect(throws: DurableFormatError.self) { try s.apply(.append(id: 1, tokens: 1, newPages: [])) }
        #expect(throws: DurableFormatError.self) { try s.apply(.release(id: 1)) }
        #expect(throws: DurableFormatError.self) { try s.apply(.put(SequenceImage(id: 1, model: "other", aliases: [], heads: []))) }
        try s.apply(.put(SequenceImage(id: 1, layout: Self.layout)))
        // Wrong number of page lists, too few pages for the tokens, a page outside the segment.
        #expect(throws: DurableFormatError.self) { try s.apply(.append(id: 1, tokens: 1, newPages: [[PageID(0)]])) }
        #expect(throws: DurableFormatError.self) { try s.apply(.append(id: 1, tokens: 5, newPages: (0..<heads).map { [PageID(UInt32($0))] })) }
        #expect(throws: DurableFormatError.self) { try s.apply(.append(id: 1, tokens: 1, newPages: (0..<heads).map { [PageID(UInt32(16 + $0))] })) }
        #expect(s.sequences[1]?.length == 0)
        // Blocks: unknown parent, evicting one with children.
        let a = PrefixHash(lo: 5, hi: 5)
        #expect(throws: DurableFormatError.self) { try s.apply(.prefixInsert(hash: a, parent: PrefixHash(lo: 9, hi: 9), pages: [PageID(1)])) }
        try s.apply(.prefixInsert(hash: a, parent: .root, pages: [PageID(1)]))
        try s.apply(.prefixInsert(hash: PrefixHash(lo: 6, hi: 6), parent: a, pages: [PageID(2)]))
        #expect(throws: DurableFormatError.self) { try s.apply(.prefixEvict(hash: a)) }
        // Two sequences writing into one partly filled page is a broken history.
        try s.apply(.append(id: 1, tokens: 1, newPages: (0..<heads).map { [PageID(UInt32(8 + $0))] }))
        try s.apply(.put(SequenceImage(id: 2, layout: Self.layout)))
        try s.apply(.append(id: 2, tokens: 1, newPages: (0..<heads).map { [PageID(UInt32(8 + $0))] }))
        #expect(throws: DurableFormatError.self) { try s.holders() }
    }

    @Test func anAllocatorRestoredFromHoldersServesOnlyFreePages() throws {
        let a = PageAllocator(pageCount: 8)
        a.restore(holders: [1, 0, 2, 0, 0, 3, 0, 1])
        #expect(a.freeCount == 4 && a.usedCount == 4 && a.sharedCount == 2)
        #expect(a.refCounts(of: (0..<8).map { PageID(UInt32($0)) }) == [1, 0, 2, 0, 0, 3, 0, 1])
        #expect(try a.allocate(4).map(\.raw).sorted() == [1, 3, 4, 6])
        #expect(throws: KVDError.self) { try a.allocate(1) }
        #expect(a.release([PageID(5), PageID(5), PageID(5)]) == 1)
    }

    @Test func aSequenceRebuiltFromItsImageIsTheSame() throws {
        let image = compacted(id: 9)
        let seq = KVSequence(restoring: image, layout: Self.layout, tenant: "t")
        #expect(seq.image(pinned: true) == image)
        #expect(seq.generation == 3 && seq.everCompacted && seq.aliases == [nil, 0] && seq.length == 11)
    }
}
