import KVDCore
import Testing

/// `compactionPageChanges` predicts, before anything moves, what `compact` then does to the pages:
/// which pages lose a holder and how many fresh ones copy-on-write takes. The memory manager uses
/// it to skip compactions that would cost memory instead of freeing it.
@Suite struct CompactionGainTests {
    typealias F = SharingFixture
    let heads = SharingFixture.layout.headCount

    /// Pages among `released` that the arena gets back when each loses one holder.
    func returned(_ f: F, _ released: [PageID]) -> Int { released.filter { f.allocator.refCount(of: $0) == 1 }.count }

    @Test func unsharedHeadsPackInPlaceAndReleaseTheirTail() throws {
        let f = F(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: F.layout, tenant: "")
        try f.append(s, 9)  // 3 full pages per head
        let plan = f.plan(keeping: [0, 4, 8])  // 3 tokens: 1 page
        let change = s.compactionPageChanges(plan: plan, allocator: f.allocator)
        #expect(change.fresh == 0)
        #expect(change.released.count == 2 * heads)
        let predicted = returned(f, change.released) - change.fresh
        let used = f.allocator.usedCount
        let out = try s.compact(plan: plan, method: "t", allocator: f.allocator, memory: f.memory)
        #expect(out.pagesFreed - out.pagesAllocated == predicted)
        #expect(used - f.allocator.usedCount == 2 * heads)
    }

    @Test func aForkSharingEveryPageGainsNothingByCompacting() throws {
        let f = F(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: F.layout, tenant: "")
        try f.append(s, 9)
        let c = try s.fork(length: 9, newID: SequenceID(2), allocator: f.allocator, memory: f.memory)
        let plan = f.plan(keeping: [0, 4, 5, 8])  // 4 tokens: 2 fresh pages per head
        let change = c.compactionPageChanges(plan: plan, allocator: f.allocator)
        #expect(change.fresh == 2 * heads)
        #expect(returned(f, change.released) == 0)  // the original still holds them all
        let used = f.allocator.usedCount
        let out = try c.compact(plan: plan, method: "t", allocator: f.allocator, memory: f.memory)
        #expect(out.pagesFreed - out.pagesAllocated == -2 * heads)
        #expect(f.allocator.usedCount - used == 2 * heads)
    }

    @Test func aForkWithItsOwnTailGainsOnlyThoseTailPages() throws {
        let f = F(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: F.layout, tenant: "")
        try f.append(s, 6)
        let c = try s.fork(length: 6, newID: SequenceID(2), allocator: f.allocator, memory: f.memory)
        try f.append(c, 12)  // 6 tokens shared (2 pages), 12 own (4 pages) per head
        let plan = f.plan(keeping: Array(0..<3))  // keeps the first page's tokens
        let change = c.compactionPageChanges(plan: plan, allocator: f.allocator)
        // Packing writes nothing (the kept tokens stay where they are) and the last kept page is
        // full, so every head packs in place and drops its 5 later pages, 4 of them its own.
        #expect(change.fresh == 0)
        #expect(change.released.count == 5 * heads)
        let predicted = returned(f, change.released)
        #expect(predicted == 4 * heads)
        let out = try c.compact(plan: plan, method: "t", allocator: f.allocator, memory: f.memory)
        #expect(out.pagesFreed - out.pagesAllocated == predicted)
    }

    @Test func keepingEverythingChangesNothing() throws {
        let f = F(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: F.layout, tenant: "")
        try f.append(s, 5)
        let change = s.compactionPageChanges(plan: f.plan(keeping: Array(0..<5)), allocator: f.allocator)
        #expect(change.released.isEmpty && change.fresh == 0)
    }
}
