import AdaKV
import Foundation
import HeadKV
import KVDCore
import KVDPluginAPI
import PyramidKV
import SnapKV
import Testing

/// Budgets after KVSharer: an aliased layer holds no tokens, so `fraction` averages over the heads
/// of the other layers and every allocator spreads L'·H·B over them (L' layers holding a cache),
/// giving aliased heads 0. Layout: 4 layers × 2 KV heads, layer 3 aliased to layer 1; every
/// expectation is worked out by hand, with what the old code (every head counted) gave.
@Suite struct AliasedBudgetTests {
    static let layout = ModelLayout(name: "t4", layers: 4, kvHeads: 2, qHeads: 4, headDim: 8, dtype: .f32, pageTokens: 4, defaultMethod: "snapkv")
    static let aliases: [Int?] = [nil, nil, nil, 1]
    /// 42 tokens before the window in each head of layers 0–2, none in layer 3's.
    static let prefix = [42, 42, 42, 42, 42, 42, 0, 0]

    func context(_ params: [(name: String, value: ParamValue)], _ specs: [ParamSpec]) throws -> CompactionContext {
        let (view, obs) = randomInputs(count: 50, window: 8, seed: 1, layout: Self.layout, aliases: Self.aliases)
        let p = try MethodDescriptor(name: "t", description: "", params: specs).resolve(params)
        return CompactionContext(view: view, observation: obs, params: p, method: "t", baseDirectory: "")
    }

    @Test func fractionAveragesOverHeadsHoldingTokens() throws {
        let a = UniformAllocator()
        // Uneven prefixes (an earlier compaction): Σ = 236 over the 6 heads holding tokens.
        // 0.3 · 236/6 = 11.8 → B = 12. Counting the 2 empty heads: 0.3 · 236/8 = 8.85 → 9.
        let ctx = try context([("fraction", .float(0.3))], a.params)
        let uneven = [40, 44, 30, 34, 42, 46, 0, 0]
        #expect(BudgetParams.average(ctx, prefix: uneven) == 12)
        // 0.5 · 42 = 21 per head, 0 for layer 3 (old: 0.5 · 31.5 = 15.75 → 16 for all 8 heads).
        let half = try context([("fraction", .float(0.5))], a.params)
        let b = try a.budgets(half, prefix: Self.prefix, scores: nil)
        #expect(b == [21, 21, 21, 21, 21, 21, 0, 0])
        #expect(b.reduce(0, +) == 3 * 2 * 21)
        // A plain budget is B as given; aliased heads still get nothing (old: 10 each, Σ 80).
        #expect(try a.budgets(try context([("budget", .int(10))], a.params), prefix: Self.prefix, scores: nil) == [10, 10, 10, 10, 10, 10, 0, 0])
    }

    @Test func snapKVReportsTheBudgetsOfHeldLayers() throws {
        // The whole composed method on the aliased view: what the reply's budgets would say.
        let m = SnapKV.method
        let ctx = try context([("fraction", .float(0.5))], m.descriptor.params)
        let plan = try m.plan(ctx)
        #expect(plan.budgets == [21, 21, 21, 21, 21, 21, 0, 0])
        #expect(plan.plan.kept.map(\.count) == [29, 29, 29, 29, 29, 29, 0, 0])  // 21 + window 8
    }

    @Test func pyramidRunsItsLineOverHeldLayers() throws {
        let a = PyramidAllocator()
        // B = 10, β = 2: min 5, max 15 over the L' = 3 layers holding a cache → 15, 10, 5 (Σ 30 = 3·10).
        // Old: the line over all 4 layers, 15, 11.67, 8.33, 5 → 15, 12, 8, 5: layer 3's 5 per head
        // lost, 35 kept by layers 0–2.
        let b = try a.budgets(try context([("budget", .int(10)), ("beta", .float(2))], a.params), prefix: Self.prefix, scores: nil)
        #expect(b == [15, 15, 10, 10, 5, 5, 0, 0])
        #expect(b.reduce(0, +) == 3 * 2 * 10)
        // fraction 0.5: B = 21 (old 16); β = 20: min 1.05, max 40.95 < 42 (no clamp) → 40.95, 21,
        // 1.05: floors 40, 21, 1 (62), +1 to .95 (layer 0) → 41, 21, 1 (Σ 63 = 3·21).
        // Old: B = 16 over 4 layers → 31, 21, 11, 1.
        let f = try a.budgets(try context([("fraction", .float(0.5)), ("beta", .float(20))], a.params), prefix: Self.prefix, scores: nil)
        #expect(f == [41, 41, 21, 21, 1, 1, 0, 0])
    }

    @Test func headKVSplitsThePoolOverHeldLayers() throws {
        // Layer 3 is the most important on file, but aliased: it keeps nothing and gets nothing.
        let path = try writeHeadScores([[1, 3], [0, 0], [2, 2], [4, 4]])
        let a = HeadKVAllocator()
        let ctx = try context([("budget", .int(10)), ("beta", .float(2)), ("scores", .string(path))], a.params)
        try a.check(ctx.params, CheckContext(layout: Self.layout, baseDirectory: ""))
        let b = try a.budgets(ctx, prefix: Self.prefix, scores: nil)
        // shared = ⌊10/2⌋ = 5, floor 5, pool 5 · 6 = 30 over heads 0–5; p = [1,3,0,0,2,2]/8 → 3.75,
        // 11.25, 0, 0, 7.5, 7.5: floors 3, 11, 0, 0, 7, 7 (28), +1 to .75 (head 0) and to the first
        // .5 (head 4) → 4, 11, 0, 0, 8, 7; plus the floor 5. Σ 60 = 3·2·10.
        // Old: pool 40 over 8 heads with p = [1,3,0,0,2,2,4,4]/16 → 8, 12, 5, 5, 10, 10, 15, 15:
        // 30 of the 80 on layer 3, 50 kept.
        #expect(b == [9, 16, 5, 5, 13, 12, 0, 0])
        #expect(b.reduce(0, +) == 3 * 2 * 10)
    }

    @Test func adaKVUsesTheHeldAverage() throws {
        let a = AdaKVAllocator()
        let ctx = try context([("fraction", .float(0.5))], a.params)
        // Head 0 of each held layer scores 1 everywhere, head 1 scores 0. B = 21: the layer's top 42
        // are head 0's 42 → hits 42, 0; weights 42·0.8 + 0.2·21 = 37.8 and 4.2 of 42 → 38, 4.
        // Old: B = 16, top 32 → hits 32, 0; weights 28.8, 3.2 of 32 → 29, 3.
        let scores: [[Float]] = (0..<8).map { h in h >= 6 ? [] : [Float](repeating: h % 2 == 0 ? 1 : 0, count: 42) }
        #expect(try a.budgets(ctx, prefix: Self.prefix, scores: scores) == [38, 4, 38, 4, 38, 4, 0, 0])
    }
}
