import AdaKV
import Foundation
import KVDCore
import KVDPluginAPI
import Testing

/// Largest-remainder shares computed exactly (issue 16): exact ties follow the documented
/// lower-index-first rule instead of float noise. Every expectation is worked out by hand in the
/// comments.
@Suite struct ExactSharesTests {
    @Test func integerSharesFollowTheTieRule() {
        // 7 : 7 : 1 of 10 → 4.667, 4.667, 0.667: floors 4, 4, 0 (8); the two missing go to the
        // three equal remainders (2/3 each) in index order → heads 0 and 1.
        #expect(largestRemainder(numerators: [7, 7, 1], total: 10) == [5, 5, 0])
        #expect(largestRemainder(numerators: [1, 1, 1], total: 2) == [1, 1, 0])
        #expect(largestRemainder(numerators: [0, 0], total: 5) == [3, 2])
        // n·total passes Int.max (2^62 · 6): still exact. Shares 2^62 : 2^62 : 1 of 6 → 3, 3, 0.
        #expect(largestRemainder(numerators: [1 << 62, 1 << 62, 1], total: 6) == nil)  // Σ overflows
        #expect(largestRemainder(numerators: [1 << 61, 1 << 61, 1], total: 6) == [3, 3, 0])
        #expect(largestRemainder(numerators: [3, -1], total: 2) == nil)
    }

    @Test func decimalFractionReadsTheWrittenDecimal() {
        #expect(decimalFraction(0.2)! == (2, 10))
        #expect(decimalFraction(20)! == (20, 1))
        #expect(decimalFraction(0.125)! == (125, 1000))
        #expect(decimalFraction(0.1 + 0.2) == nil)  // 0.30000000000000004: 17 decimals
        #expect(decimalFraction(-1) == nil)
        #expect(decimalFraction(.nan) == nil)
    }

    @Test func adaKVExactTieGoesToTheLowerHead() {
        // B = 64, f = 0.2, hits 81, 56, 55 (Σ 192 = 3·64): weights 81·0.8 + 12.8 = 77.6,
        // 56·0.8 + 12.8 = 57.6, 55·0.8 + 12.8 = 56.8; floors 77, 57, 56 (190); the two missing
        // go to .8 (head 2) and then the tie .6/.6 to the lower head 0 → 78, 57, 57.
        // (In Double, 57.6 came out as 57.60000000000001 and gave 77, 58, 57.)
        #expect(adaKVShares(hits: [81, 56, 55], budget: 64, floor: 0.2) == [78, 57, 57])
        // The same through the allocator: 3 KV heads whose top-192 scores split 81 / 56 / 55.
        let m = ModelLayout(name: "t3", layers: 1, kvHeads: 3, qHeads: 3, headDim: 4, dtype: .f32, pageTokens: 4, defaultMethod: "adakv")
        let n = 100
        let keys = (0..<3).map { _ in [Float](repeating: 0, count: n * m.headDim) }
        let view = SequenceView(layout: m, keys: keys, values: keys)
        let a = AdaKVAllocator()
        let p = try! MethodDescriptor(name: "t", description: "", params: a.params).resolve([("budget", .int(64))])
        let ctx = CompactionContext(view: view, observation: nil, params: p, method: "t", baseDirectory: "")
        let scores: [[Float]] = [81, 56, 55].map { k in (0..<n).map { $0 < k ? 1 : 0 } }
        let b = try! a.budgets(ctx, prefix: [n, n, n], scores: scores)
        #expect(b == [78, 57, 57])
    }
}
