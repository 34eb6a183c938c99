import KVDAttention
import KVDCore
import KVDPluginAPI

/// AdaKV — Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation"
/// (2024). The heads of a layer share H·B tokens: take the layer's global top-(H·B) scores, give head
/// h count_h = hits_h·(1 − f) + f·B (floor fraction f), rounded by largest remainder so the layer
/// total stays H·B; then top-count_h inside each head.
public struct AdaKVAllocator: BudgetAllocator {
    public init() {}
    public let name = "adakv"
    public let needsScores = true
    public var params: [ParamSpec] {
        BudgetParams.specs + [ParamSpec("floor", .float, default: .float(0.2), min: 0, max: 1, "fraction of the budget every head keeps at least")]
    }

    public func budgets(_ context: CompactionContext, prefix: [Int], scores: [[Float]]?) throws(KVDError) -> [Int] {
        guard let scores else { throw .internalError("adakv needs scores") }
        let m = context.layout
        let b = BudgetParams.average(context.params, prefix: prefix)
        let f = context.params.float("floor")
        var out = [Int](repeating: 0, count: m.headCount)
        for l in 0..<m.layers {
            let heads = Array((l * m.kvHeads)..<((l + 1) * m.kvHeads))
            // (score, head, position) of every eligible token; highest first, ties to lower head, then position.
            var all: [(Float, Int, Int)] = []
            for h in heads { for (t, s) in scores[h].enumerated() { all.append((s, h, t)) } }
            let take = min(m.kvHeads * b, all.count)
            all.sort { a, c in a.0 != c.0 ? a.0 > c.0 : (a.1 != c.1 ? a.1 < c.1 : a.2 < c.2) }
            var hits = [Int: Int]()
            for (_, h, _) in all.prefix(take) { hits[h, default: 0] += 1 }
            let weights = heads.map { Double(hits[$0] ?? 0) * (1 - f) + f * Double(b) }
            let shares = largestRemainder(weights, total: m.kvHeads * b)
            for (i, h) in heads.enumerated() { out[h] = min(shares[i], prefix[h]) }
        }
        return out
    }
}

public enum AdaKV {
    public static let method = ComposedMethod(
        name: "adakv", description: "AdaKV (Feng et al. 2024): a layer's budget moves to the heads that need it, SnapKV scores",
        scorer: WindowAttentionScorer(pooling: .avg, kernel: 5), allocator: AdaKVAllocator())
}
