import KVDCore
import Testing

/// Reference counts in `PageAllocator`: a page returns to the free list only when its last holder
/// releases it, and is counted once against the arena and the quota however many hold it.
@Suite struct RefCountTests {
    @Test func retainedPageSurvivesOneReleaseAndIsFreedByTheLast() throws {
        let a = PageAllocator(pageCount: 4)
        let p = try a.allocate(1)
        #expect(a.refCount(of: p[0]) == 1)
        a.retain(p)
        a.retain(p)
        #expect(a.refCount(of: p[0]) == 3)
        #expect(a.sharedCount == 1)
        #expect(a.usedCount == 1)  // shared pages count once
        #expect(a.release(p) == 0)
        #expect(a.release(p) == 0)
        #expect(a.sharedCount == 0)  // one holder left: no longer shared
        #expect(a.freeCount == 3)
        #expect(a.release(p) == 1)
        #expect(a.refCount(of: p[0]) == 0)
        #expect(a.freeCount == 4)
    }

    @Test func aPageListedTwiceInOneCallCountsTwice() throws {
        let a = PageAllocator(pageCount: 2)
        let p = try a.allocate(1)[0]
        a.retain([p, p])
        #expect(a.refCount(of: p) == 3)
        #expect(a.release([p, p, p]) == 1)
        #expect(a.freeCount == 2)
    }

    @Test func freeIsReleaseByOne() throws {
        let a = PageAllocator(pageCount: 3)
        let pages = try a.allocate(2)
        a.retain(pages[0...0])
        #expect(a.free(pages) == 1)  // pages[1] had one holder; pages[0] still has one
        #expect(a.refCount(of: pages[0]) == 1)
        #expect(a.refCount(of: pages[1]) == 0)
        #expect(a.freeCount == 2)
    }

    @Test func sharedPagesCountOnceAgainstTheQuota() throws {
        let a = PageAllocator(pageCount: 10, quota: 3, quotaName: "q")
        let pages = try a.allocate(3)
        a.retain(pages)
        #expect(a.usedCount == 3)
        #expect(throws: KVDError.self) { try a.allocate(1) }
        a.release(pages)  // still held once each: the quota is still full
        #expect(throws: KVDError.self) { try a.allocate(1) }
        a.release(pages[0...0])
        #expect(try a.allocate(1).count == 1)
    }

    @Test func failedAllocationLeavesCountsAlone() throws {
        let a = PageAllocator(pageCount: 3)
        let pages = try a.allocate(2)
        a.retain(pages)
        #expect(throws: KVDError.self) { try a.allocate(2) }
        #expect(pages.map { a.refCount(of: $0) } == [2, 2])
        #expect(a.sharedCount == 2)
        #expect(a.freeCount == 1)
    }

    @Test func anySharedLooksAtEveryPageGiven() throws {
        let a = PageAllocator(pageCount: 4)
        let pages = try a.allocate(3)
        #expect(!a.anyShared(pages))
        #expect(!a.anyShared([PageID]()))
        a.retain(pages[2...2])
        #expect(a.anyShared(pages))
        #expect(!a.anyShared(pages[0...1]))
    }

    @Test func reallocatedPageStartsAtOneHolder() throws {
        let a = PageAllocator(pageCount: 1)
        let p = try a.allocate(1)
        a.retain(p)
        a.release(p)
        a.release(p)
        let again = try a.allocate(1)
        #expect(again == p)
        #expect(a.refCount(of: again[0]) == 1)
        #expect(a.sharedCount == 0)
    }
}

/// The bookkeeping bugs reference counts exist to catch end the process (exit tests run in a child).
@Suite struct RefCountTrapTests {
    @Test func releasingAPageWithNoHolderTraps() async {
        await #expect(processExitsWith: .failure) {
            let a = PageAllocator(pageCount: 2)
            let p = try! a.allocate(1)
            a.release(p)
            a.release(p)
        }
    }

    @Test func retainingAFreePageTraps() async {
        await #expect(processExitsWith: .failure) {
            let a = PageAllocator(pageCount: 2)
            a.retain([PageID(1)])
        }
    }
}
