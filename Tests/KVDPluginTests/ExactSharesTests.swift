import AdaKV
import Foundation
import KVDCore
import KVDPluginAPI
import PyramidKV
import Testing

/// Largest-remainder shares computed exactly (issue 16): exact ties follow the documented
/// lower-index-first rule instead of float noise, and PyramidKV's top clamp. Every expectation is
/// worked out by hand in the comments.
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

    @Test func pyramidClampsItsTopToThePrefix() {
        // B = 40, β = 4, L = 3: min 10, max 70. Prefix 80 ≥ 70: the plain line 70, 40, 10.
        #expect(pyramidBudgets(layers: 3, budget: 40, beta: 4, prefix: 80) == [70, 40, 10])
        // Prefix 48 < 70: top 48, bottom 2·40 − 48 = 32 → 48, 40, 32 (Σ 120 = 3·40). Unclamped,
        // layer 0 would have been cut to 48 by the prefix and 22 tokens lost (Σ 98).
        #expect(pyramidBudgets(layers: 3, budget: 40, beta: 4, prefix: 48) == [48, 40, 32])
        // B = 30, β = 20, L = 3, prefix 42: max 58.5 → top 42, bottom 18 → 42, 30, 18.
        #expect(pyramidBudgets(layers: 3, budget: 30, beta: 20, prefix: 42) == [42, 30, 18])
        // L = 4, B = 10, prefix 15: top 15, bottom 5, step 10/3 → 15, 11.67, 8.33, 5: floors
        // 15, 11, 8, 5 (39); the missing 1 goes to .67 (layer 1) → 15, 12, 8, 5.
        #expect(pyramidBudgets(layers: 4, budget: 10, beta: 20, prefix: 15) == [15, 12, 8, 5])
        // Prefix shorter than B: top n, bottom 2B − n > n; every layer keeps its whole prefix.
        #expect(pyramidBudgets(layers: 3, budget: 10, beta: 20, prefix: 6) == [6, 10, 14])
        #expect(pyramidBudgets(layers: 1, budget: 10, beta: 20, prefix: 6) == [10])
    }

    @Test func pyramidExactTieGoesToTheLowerLayer() {
        // L = 5, B = 10, β = 2.5: min 4, max 16, step 3 → 16, 13, 10, 7, 4 (no remainders).
        #expect(pyramidBudgets(layers: 5, budget: 10, beta: 2.5, prefix: 100) == [16, 13, 10, 7, 4])
        // L = 3, B = 10, β = 20: 19.5, 10, 0.5 → the .5/.5 tie goes to layer 0 → 20, 10, 0.
        #expect(pyramidBudgets(layers: 3, budget: 10, beta: 20, prefix: 42) == [20, 10, 0])
        // L = 4, B = 10, β = 20: 19.5, 13.17, 6.83, 0.5: floors 19, 13, 6, 0 (38); the 2 missing go
        // to .83 (layer 2), then the .5/.5 tie to layer 0 → 20, 13, 7, 0. (In Double the last
        // layer's 0.5 came out larger and the result was 19, 13, 7, 1.)
        #expect(pyramidBudgets(layers: 4, budget: 10, beta: 20, prefix: 100) == [20, 13, 7, 0])
        // L = 7, B = 7, β = 1.4: min 5, max 9, step 2/3 → 9, 8.33, 7.67, 7, 6.33, 5.67, 5:
        // floors 9, 8, 7, 7, 6, 5, 5 (47); the 2 missing go to the .67s, layers 2 and 5.
        #expect(pyramidBudgets(layers: 7, budget: 7, beta: 1.4, prefix: 100) == [9, 8, 8, 7, 6, 6, 5])
    }
}
