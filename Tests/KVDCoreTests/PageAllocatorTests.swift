import KVDCore
import Testing

@Suite struct PageAllocatorTests {
    @Test func allocatesDistinctPagesAndCountsThem() throws {
        let a = PageAllocator(pageCount: 10)
        let first = try a.allocate(4)
        let second = try a.allocate(3)
        #expect(Set(first + second).count == 7)
        #expect((first + second).allSatisfy { $0.raw < 10 })
        #expect(a.freeCount == 3)
        #expect(a.usedCount == 7)
    }

    @Test func failedAllocationTakesNothing() throws {
        let a = PageAllocator(pageCount: 5)
        _ = try a.allocate(3)
        #expect(throws: KVDError.self) { try a.allocate(3) }
        #expect(a.freeCount == 2)
        do {
            _ = try a.allocate(3)
        } catch {
            #expect(error.code == .resourceExhausted)
            #expect(error.message.contains("arena full"))
        }
    }

    @Test func freedPagesComeBackAndCanBeReused() throws {
        let a = PageAllocator(pageCount: 4)
        let all = try a.allocate(4)
        #expect(a.freeCount == 0)
        a.free(all[1...2])
        #expect(a.freeCount == 2)
        let again = try a.allocate(2)
        #expect(Set(again) == Set(all[1...2]))
    }

    @Test func zeroPagesIsFine() throws {
        let a = PageAllocator(pageCount: 0)
        #expect(try a.allocate(0).isEmpty)
        #expect(throws: KVDError.self) { try a.allocate(1) }
    }
}

@Suite struct RangeAllocatorTests {
    @Test func firstFitAlignedAndMergedOnFree() throws {
        let r = RangeAllocator(capacity: 1024)
        let a = try r.allocate(100)  // rounds to 128
        let b = try r.allocate(64)
        let c = try r.allocate(256)
        #expect(a == 0..<128)
        #expect(b == 128..<192)
        #expect(c == 192..<448)
        #expect(r.usedBytes == 448)
        r.free(b)
        // A 64-byte request fits in b's hole; a larger one goes after c.
        #expect(try r.allocate(64) == 128..<192)
        #expect(try r.allocate(100) == 448..<576)
        r.free(a)
        r.free(c)
        r.free(128..<192)
        r.free(448..<576)
        // Everything merged back: the whole capacity is one range again.
        #expect(try r.allocate(1024) == 0..<1024)
    }

    @Test func fullStagingIsResourceExhausted() throws {
        let r = RangeAllocator(capacity: 256)
        _ = try r.allocate(200)
        #expect(throws: KVDError.resourceExhausted(
            "staging area full: no 64 contiguous bytes free of 256 (256 in use); release sequences, query fewer layers, use pages mode, or raise arena.staging_bytes")
        ) { try r.allocate(1) }
    }
}

@Suite struct PageQuotaTests {
    @Test func quotaCapsPagesInUseAndNamesItself() throws {
        let a = PageAllocator(pageCount: 10, quota: 4, quotaName: "tenant 't' page quota (quotas.pages)")
        #expect(a.limit == 4)
        let first = try a.allocate(3)
        do {
            _ = try a.allocate(2)
            Issue.record("allocation past the quota succeeded")
        } catch {
            #expect(error.code == .resourceExhausted)
            #expect(error.message.contains("quotas.pages"))
        }
        #expect(a.usedCount == 3)
        _ = try a.allocate(1)
        a.free(first)
        #expect(try a.allocate(3).count == 3)
    }

    @Test func quotaAtOrAboveThePageCountIsNoQuota() throws {
        #expect(PageAllocator(pageCount: 5, quota: 9).limit == 5)
        #expect(PageAllocator(pageCount: 5, quota: 0).limit == 5)
        let a = PageAllocator(pageCount: 5, quota: 5, quotaName: "q")
        do {
            _ = try a.allocate(6)
            Issue.record("more pages than exist were handed out")
        } catch {
            #expect(error.message.contains("arena full"))
        }
    }
}
