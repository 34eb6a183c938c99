import Foundation
import KVDPluginAPI
import Testing

/// Budget arithmetic, pooling and top-k against hand-worked expectations.
@Suite struct ArithmeticTests {
    @Test func largestRemainderSumsExactlyAndFavoursLargestFractions() {
        // exact shares 3.5, 2.25, 4.25 of 10 → floors 3, 2, 4 (9); the 1 missing goes to 3.5.
        #expect(largestRemainder([3.5, 2.25, 4.25], total: 10) == [4, 2, 4])
        // Equal fractions: lower index first.
        #expect(largestRemainder([1, 1, 1], total: 2) == [1, 1, 0])
        #expect(largestRemainder([0, 0], total: 5) == [3, 2])
        for total in [0, 1, 7, 1000] {
            #expect(largestRemainder([0.3, 5, 2, 0.01], total: total).reduce(0, +) == total)
        }
    }

    @Test func avgPoolCountsZeroPadding() {
        // kernel 3 over [3, 6, 9]: (0+3+6)/3, (3+6+9)/3, (6+9+0)/3
        #expect(pool([3, 6, 9], kind: .avg, kernel: 3) == [3, 6, 5])
        #expect(pool([1, 2], kind: .none, kernel: 5) == [1, 2])
    }

    @Test func maxPoolIgnoresPadding() {
        #expect(pool([-3, -1, -2, -5], kind: .max, kernel: 3) == [-1, -1, -1, -2])
    }

    @Test func topKKeepsBestThenWindowWithLowerPositionOnTies() {
        // scores for tokens 0..4; window keeps 5, 6.
        #expect(topK(scores: [1, 5, 5, 0, 5], budget: 2, window: 2, count: 7) == [1, 2, 5, 6])
        #expect(topK(scores: [1, 5, 5, 0, 5], budget: 9, window: 2, count: 7) == [0, 1, 2, 3, 4, 5, 6])
        #expect(topK(scores: [1, 5, 5, 0, 5], budget: 0, window: 2, count: 7) == [5, 6])
        #expect(topK(scores: [9, 9, 1, 2, 0], budget: 1, sinks: 2, window: 0, count: 5) == [0, 1, 3])
    }

    @Test func topKRanksNaNLowestAndStillKeepsTheBudget() {
        // An inf key makes a head's window-attention scores NaN; the head must still keep `budget`.
        #expect(topK(scores: [1, .nan, 3, .nan, 2], budget: 2, window: 1, count: 6) == [2, 4, 5])
        #expect(topK(scores: [1, .nan, 3, .nan, 2], budget: 4, window: 0, count: 5) == [0, 1, 2, 4])
        #expect(topK(scores: [.nan, .nan, .nan, .nan], budget: 2, window: 1, count: 5) == [0, 1, 4])
    }

    @Test func topKEqualsTheSortDefinitionOnRandomTies() {
        var rng = SplitMix(seed: 99)
        for trial in 0..<300 {
            let n = Int(rng.next() % 60) + 1
            let window = Int(rng.next() % UInt64(n))
            let prefix = n - window
            // Few distinct values, so ties at the cut are common.
            let scores = (0..<prefix).map { _ in Float(rng.next() % 5) }
            let budget = Int(rng.next() % UInt64(prefix + 2))
            let sinks = trial % 3 == 0 ? Int(rng.next() % 4) : 0
            let sinkEnd = min(sinks, prefix)
            let ranked = (sinkEnd..<prefix).sorted { a, b in scores[a] != scores[b] ? scores[a] > scores[b] : a < b }
            let want = (0..<sinkEnd).map(Int32.init) + ranked.prefix(budget).sorted().map(Int32.init) + (prefix..<n).map(Int32.init)
            #expect(topK(scores: scores, budget: budget, sinks: sinks, window: window, count: n) == want, "trial \(trial)")
        }
    }
}

/// `ComputeThreads` bounds every method's per-head work; each head must still be visited once.
@Suite(.serialized) struct ComputeThreadsTests {
    final class Hits: @unchecked Sendable {  // safe: each iteration writes its own index
        let counts: UnsafeMutableBufferPointer<Int>
        init(_ n: Int) { counts = .allocate(capacity: n); counts.initialize(repeating: 0) }
        deinit { counts.deallocate() }
    }

    @Test(arguments: [0, 1, 2, 7])
    func everyItemOnceWhateverTheLimit(_ threads: Int) {
        ComputeThreads.set(threads)
        defer { ComputeThreads.set(0) }
        #expect(ComputeThreads.count == (threads == 0 ? max(1, ProcessInfo.processInfo.activeProcessorCount) : threads))
        let hits = Hits(37)
        ComputeThreads.forEach(37) { i in hits.counts[i] += 1 }
        #expect(Array(hits.counts) == Array(repeating: 1, count: 37))
        let workers = Hits(64)
        ComputeThreads.workers(for: 5) { worker, count in workers.counts[worker] = count }
        #expect(workers.counts.prefix(min(5, ComputeThreads.count)).allSatisfy { $0 == min(5, ComputeThreads.count) })
    }
}
