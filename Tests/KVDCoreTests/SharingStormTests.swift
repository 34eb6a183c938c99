import Dispatch
import KVDCore
import Synchronization
import Testing

/// Random fork / adopt / append / compact / alias / release sequences against a model of what each
/// sequence should hold. After every step every live sequence reads back exactly its model (bit for
/// bit, so no step wrote into another's pages), every page's reference count equals the number of
/// heads holding it, and partly filled pages are never shared. At the end every page is free.
@Suite struct SharingStormTests {
    typealias F = SharingFixture
    static let pageCount = 96

    final class Live {
        let seq: KVSequence
        var model: [[UInt32]]
        init(_ seq: KVSequence, _ model: [[UInt32]]) {
            self.seq = seq
            self.model = model
        }
    }

    /// What the storm did, so the test can insist every path was taken.
    struct Tally {
        var forks = 0, adopts = 0, copyingCompactions = 0, inPlaceCompactions = 0, aliases = 0
        var exhausted = 0, refusedForks = 0, releases = 0
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func stormEndsWithEveryPageFree(seed: UInt64) throws {
        let f = F(pages: Self.pageCount)
        var rng = SplitMix64(seed: seed)
        var live: [Live] = []
        var nextID: UInt64 = 1
        var tally = Tally()
        let heads = F.layout.headCount
        let pageTokens = F.layout.pageTokens
        func newID() -> SequenceID {
            defer { nextID += 1 }
            return SequenceID(nextID)
        }
        func pick() -> Live { live[Int(rng.next() % UInt64(live.count))] }
        func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }

        for _ in 0..<1500 {
            let op = live.isEmpty ? 0 : below(10)
            switch op {
            case 0, 1:  // a new sequence
                let s = KVSequence(id: newID(), layout: F.layout, tenant: "")
                do {
                    let tags = try f.append(s, 1 + below(10))
                    live.append(Live(s, Array(repeating: tags, count: heads)))
                } catch { tally.exhausted += 1 }
            case 2, 3:  // append
                let l = pick()
                do {
                    let tags = try f.append(l.seq, 1 + below(7))
                    for h in 0..<heads where !l.seq.isAliased(head: h) { l.model[h] += tags }
                } catch {
                    #expect(error.code == .resourceExhausted)
                    tally.exhausted += 1
                }
            case 4:  // fork
                let l = pick()
                let n = below(l.seq.length + 1)
                do {
                    let c = try l.seq.fork(length: n, newID: newID(), allocator: f.allocator, memory: f.memory)
                    live.append(Live(c, l.model.map { Array($0.prefix(n)) }))
                    tally.forks += 1
                } catch where error.code == .failedPrecondition {
                    #expect(l.seq.everCompacted)
                    tally.refusedForks += 1
                } catch {
                    #expect(error.code == .resourceExhausted)
                    tally.exhausted += 1
                }
            case 5:  // adopt whole pages of a plain sequence, as the prefix index would hand them out
                let l = pick()
                guard !l.seq.everCompacted, l.seq.length >= pageTokens else { continue }
                let pages = 1 + below(l.seq.length / pageTokens)
                let a = try KVSequence.adopt(
                    id: newID(), layout: F.layout, tenant: "", pages: l.seq.heads.map { Array($0.pages.prefix(pages)) },
                    tokens: pages * pageTokens, allocator: f.allocator)
                live.append(Live(a, l.model.map { Array($0.prefix(pages * pageTokens)) }))
                tally.adopts += 1
            case 6, 7:  // compact: a random subset per head
                let l = pick()
                let kept = l.seq.heads.map { head in (0..<Int32(head.count)).filter { _ in rng.next() % 3 != 0 } }
                do {
                    let out = try l.seq.compact(plan: CompactionPlan(kept: kept), method: "storm", allocator: f.allocator, memory: f.memory)
                    if out.pagesAllocated > 0 { tally.copyingCompactions += 1 } else { tally.inPlaceCompactions += 1 }
                    for h in 0..<heads { l.model[h] = kept[h].map { l.model[h][Int($0)] } }
                } catch {
                    #expect(error.code == .resourceExhausted)
                    tally.exhausted += 1
                }
            case 8:  // alias layer 1 to layer 0, now and then
                let l = pick()
                guard below(3) == 0 else { continue }
                _ = try l.seq.applyAliases([1: 0], allocator: f.allocator)
                for h in 0..<heads where l.seq.isAliased(head: h) { l.model[h] = [] }
                tally.aliases += 1
            default:  // release
                let i = below(live.count)
                live[i].seq.release(allocator: f.allocator)
                live.remove(at: i)
                tally.releases += 1
            }
            try #require(Self.consistent(f, live))
        }
        for l in live { l.seq.release(allocator: f.allocator) }
        #expect(f.allocator.freeCount == Self.pageCount)
        #expect(f.allocator.sharedCount == 0)
        #expect((0..<Self.pageCount).allSatisfy { f.allocator.refCount(of: PageID(UInt32($0))) == 0 })
        // Every path ran (the seeds were checked to reach each; a change that stops one shows here).
        #expect(tally.forks > 10 && tally.adopts > 10 && tally.copyingCompactions > 10 && tally.inPlaceCompactions > 10)
        #expect(tally.aliases > 0 && tally.exhausted > 0 && tally.refusedForks > 0 && tally.releases > 10)
    }

    /// Models match the bytes, reference counts match the heads holding each page, and partial
    /// last pages have one holder.
    static func consistent(_ f: F, _ live: [Live]) -> Bool {
        var holders = [Int](repeating: 0, count: pageCount)
        for l in live {
            if f.allTags(l.seq) != l.model { return false }
            for head in l.seq.heads {
                for p in head.pages { holders[Int(p.raw)] += 1 }
                if head.count % F.layout.pageTokens != 0, f.allocator.refCount(of: head.pages.last!) != 1 { return false }
            }
        }
        let refs = (0..<pageCount).map { f.allocator.refCount(of: PageID(UInt32($0))) }
        return refs == holders && f.allocator.freeCount == holders.filter { $0 == 0 }.count
            && f.allocator.sharedCount == holders.filter { $0 > 1 }.count
    }

    /// Eight threads adopt one cached prefix at once, append, compact (copying off the shared pages),
    /// fork and release, over one allocator: the reference counts stay exact under contention and
    /// the prefix's bytes never change.
    @Test func eightThreadsSharingOnePrefix() throws {
        let f = F(pages: 4096)
        let root = KVSequence(id: SequenceID(1), layout: F.layout, tenant: "")
        let prefix = try f.append(root, 12)
        let cached = root.heads.map { $0.pages }  // 4 full pages per head
        let allocator = f.allocator
        let memory = f.memory
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            var rng = SplitMix64(seed: UInt64(t))
            var tag = UInt32(100_000 * (t + 1))
            for i in 0..<200 {
                do {
                    let pages = 1 + Int(rng.next() % 4)
                    let s = try KVSequence.adopt(
                        id: SequenceID(UInt64(t * 1000 + i)), layout: F.layout, tenant: "",
                        pages: cached.map { Array($0.prefix(pages)) }, tokens: pages * 3, allocator: allocator)
                    let n = 1 + Int(rng.next() % 5)
                    let own = (0..<UInt32(n)).map { tag + $0 }
                    tag += UInt32(n)
                    try F.append(s, tags: own, allocator: allocator, memory: memory)
                    var expected = Array(prefix.prefix(pages * 3)) + own
                    let fork = try s.fork(length: s.length - 1, newID: SequenceID(1), allocator: allocator, memory: memory)
                    let kept = (0..<Int32(expected.count)).filter { $0 % 2 == 1 }
                    _ = try s.compact(plan: CompactionPlan(kept: Array(repeating: kept, count: F.layout.headCount)),
                        method: "storm", allocator: allocator, memory: memory)
                    let forkExpected = Array(expected.dropLast())
                    expected = kept.map { expected[Int($0)] }
                    for h in 0..<F.layout.headCount {
                        if F.tags(s, head: h, memory: memory) != expected || F.tags(fork, head: h, memory: memory) != forkExpected {
                            failures.withLock { $0.append("thread \(t) step \(i) head \(h)") }
                        }
                    }
                    s.release(allocator: allocator)
                    fork.release(allocator: allocator)
                } catch {
                    failures.withLock { $0.append("thread \(t) step \(i): \(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        for h in 0..<F.layout.headCount {
            #expect(f.tags(root, head: h) == prefix)
            #expect(root.heads[h].pages.allSatisfy { allocator.refCount(of: $0) == 1 })
        }
        #expect(root.release(allocator: allocator) == 4 * F.layout.headCount)
        #expect(allocator.freeCount == 4096 && allocator.sharedCount == 0)
    }
}
