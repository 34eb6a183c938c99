import KVDCore
import Testing

/// The prefix index: references it holds, longest-prefix lookup, and eviction of unused blocks
/// least recently used first, children before parents.
@Suite struct PrefixIndexTests {
    /// Hashes stand-ins: the index only compares them.
    static func h(_ n: UInt64) -> PrefixHash { PrefixHash(lo: n, hi: 0xABCD) }

    /// Indexes a chain of blocks `names` (block 0 first), one fresh page per block for 2 heads.
    @discardableResult
    static func chain(_ index: PrefixIndex, _ a: PageAllocator, _ names: [UInt64], under parent: UInt64? = nil) throws -> [[PageID]] {
        var p = parent.map(h) ?? .root
        var out: [[PageID]] = []
        for n in names {
            let pages = try a.allocate(2)
            #expect(index.insert(hash: h(n), parent: p, pages: pages))
            a.release(pages)  // the writer goes away: only the index holds them
            out.append(pages)
            p = h(n)
        }
        return out
    }

    @Test func insertTakesOneReferenceAndIgnoresDuplicatesAndOrphans() throws {
        let a = PageAllocator(pageCount: 16)
        let index = PrefixIndex(allocator: a)
        let pages = try a.allocate(2)
        #expect(index.insert(hash: Self.h(1), parent: .root, pages: pages))
        #expect(a.refCounts(of: pages) == [2, 2])
        let other = try a.allocate(2)
        #expect(!index.insert(hash: Self.h(1), parent: .root, pages: other))  // first copy stays
        #expect(!index.insert(hash: Self.h(3), parent: Self.h(2), pages: other))  // parent unknown
        #expect(a.refCounts(of: other) == [1, 1])
        #expect(index.insert(hash: Self.h(2), parent: Self.h(1), pages: other))
        #expect(index.lookup(hashes: [Self.h(1), Self.h(2)]).map(\.block) == [0, 1])
        #expect(index.entryCount == 2)
        // `lists` names exactly the pages the index holds a reference on.
        let stray = try a.allocate(1)
        #expect((pages + other).allSatisfy(index.lists) && !index.lists(stray[0]))
        index.removeAll()
        #expect(!(pages + other).contains(where: index.lists))
    }

    @Test func lookupAnswersTheLongestIndexedPrefixFromBlockZero() throws {
        let a = PageAllocator(pageCount: 32)
        let index = PrefixIndex(allocator: a)
        let pages = try Self.chain(index, a, [1, 2, 3])
        try Self.chain(index, a, [20], under: 1)  // a second branch after block 0
        let found = index.lookup(hashes: [1, 2, 3, 4].map(Self.h))
        #expect(found.map(\.hash) == [1, 2, 3].map(Self.h))
        #expect(found.map(\.pages) == pages)
        #expect(PrefixIndex.pagesPerHead(found) == [pages.map { $0[0] }, pages.map { $0[1] }])
        #expect(index.lookup(hashes: [1, 20, 3].map(Self.h)).map(\.hash) == [1, 20].map(Self.h))  // 3 is not under 20
        #expect(index.lookup(hashes: [2, 3].map(Self.h)).isEmpty)  // not from block 0
        #expect(index.hits == 5 && index.misses == 4)
    }

    @Test func evictionTakesUnusedLeavesLeastRecentFirstThenTheirParents() throws {
        let a = PageAllocator(pageCount: 64)
        let index = PrefixIndex(allocator: a)
        let first = try Self.chain(index, a, [1, 2, 3])
        let second = try Self.chain(index, a, [10, 11])
        _ = index.lookup(hashes: [1, 2, 3].map(Self.h))  // chain 1 is now the more recent
        // 2 pages per block: a limit of 3 pages takes two blocks, leaf 11 then its parent 10.
        #expect(index.evictUnused(limit: 3) == 4)
        #expect(!index.contains(Self.h(11)) && !index.contains(Self.h(10)))
        #expect(second.joined().allSatisfy { a.refCount(of: $0) == 0 && !index.lists($0) })
        #expect(first.joined().allSatisfy(index.lists))
        #expect(index.evictUnused(limit: 2) == 2)
        #expect(!index.contains(Self.h(3)) && index.contains(Self.h(2)))  // the leaf, never its parent first
        #expect(index.evictUnused(limit: 100) == 4)
        #expect(index.entryCount == 0 && a.freeCount == 64)
        #expect(first.joined().allSatisfy { a.refCount(of: $0) == 0 })
        #expect(index.evictions == 5)
    }

    @Test func pagesASequenceStillHoldsAreNotEvictedAndNeitherAreTheirAncestors() throws {
        let a = PageAllocator(pageCount: 64)
        let index = PrefixIndex(allocator: a)
        let layout = ModelLayout(name: "m", layers: 1, kvHeads: 2, qHeads: 2, headDim: 2, dtype: .f32, pageTokens: 4, defaultMethod: "x")
        try Self.chain(index, a, [1, 2])
        try Self.chain(index, a, [7])
        let found = index.lookup(hashes: [1, 2].map(Self.h))
        let s = try KVSequence.adopt(
            id: SequenceID(1), layout: layout, tenant: "", pages: PrefixIndex.pagesPerHead(found), tokens: 8, allocator: a)
        #expect(index.evictUnused(limit: 100) == 2)  // only block 7
        #expect(index.contains(Self.h(1)) && index.contains(Self.h(2)))
        let u = index.usage()
        #expect(u.pages == 4 && u.unusedPages == 0 && u.sharedPages == 0 && u.pagesSaved == 0)
        // A second adopter: each page now saves one copy.
        let t = try KVSequence.adopt(
            id: SequenceID(2), layout: layout, tenant: "", pages: PrefixIndex.pagesPerHead(found), tokens: 8, allocator: a)
        #expect(index.usage() == PrefixIndex.Usage(pages: 4, unusedPages: 0, sharedPages: 4, pagesSaved: 4))
        #expect(index.usage().bytesSaved(pageBytes: 128) == 512)
        #expect(s.release(allocator: a) == 0 && t.release(allocator: a) == 0)  // the index keeps them
        #expect(index.usage().unusedPages == 4)
        #expect(index.evictUnused(limit: 100) == 4)
        #expect(a.freeCount == 64 && a.sharedCount == 0)
    }

    @Test func removeAllReleasesEveryReference() throws {
        let a = PageAllocator(pageCount: 16)
        let index = PrefixIndex(allocator: a)
        let pages = try a.allocate(2)
        index.insert(hash: Self.h(1), parent: .root, pages: pages)
        #expect(index.removeAll() == 0)  // the writer still holds them
        #expect(a.refCounts(of: pages) == [1, 1])
        #expect(index.entryCount == 0 && index.evictUnused(limit: 1) == 0)
    }
}
