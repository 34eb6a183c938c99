import KVDAttention
import KVDCore
import KVDPluginAPI

/// AdaKV — Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation"
/// (2024). The heads of a layer share H·B tokens: take the layer's global top-(H·B) scores, give head
/// h count_h = hits_h·(1 − f) + f·B (floor fraction f), rounded by largest remainder so the layer
/// total stays H·B (exact arithmetic, see `adaKVShares`); then top-count_h inside each head.
/// Scores: window attention max-pooled with kernel 7, the AdaKV code's setting.
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
        let b = BudgetParams.average(context, prefix: prefix)
        let f = context.params.float("floor")
        var out = [Int](repeating: 0, count: m.headCount)
        // Aliased layers keep 0: their empty heads would be capped to 0 anyway, but skipping them
        // says so instead of relying on the cap.
        for l in BudgetParams.budgetedLayers(context) {
            let heads = Array((l * m.kvHeads)..<((l + 1) * m.kvHeads))
            let hits = layerHits(scores, heads: heads, take: m.kvHeads * b)
            let shares = adaKVShares(hits: hits, budget: b, floor: f)
            for (i, h) in heads.enumerated() { out[h] = min(shares[i], prefix[h]) }
        }
        return out
    }
}

/// One layer's per-head counts: weight_h = hits_h·(1 − f) + f·B, split of H·B by largest
/// remainder, ties to the lower head. Exact when f is a decimal of at most 9 places (f = p/q:
/// weight_h·q = hits_h·(q − p) + p·B in integers), so shares such as 77.6 / 57.6 / 56.8 tie as
/// written and go [78, 57, 57]; in Double 57.6 comes out as 57.60000000000001 and won the tie
/// ([77, 58, 57]).
public func adaKVShares(hits: [Int], budget b: Int, floor f: Double) -> [Int] {
    let total = hits.count * b
    if let (p, q) = decimalFraction(f), p <= q {
        var numerators: [Int] = []
        for h in hits {
            let (a, o1) = h.multipliedReportingOverflow(by: q - p)
            let (c, o2) = p.multipliedReportingOverflow(by: b)
            let (w, o3) = a.addingReportingOverflow(c)
            if o1 || o2 || o3 { numerators = []; break }
            numerators.append(w)
        }
        if numerators.count == hits.count, let shares = largestRemainder(numerators: numerators, total: total) {
            return shares
        }
    }
    // More than 9 decimals, or numbers too large for 64-bit integers: floating point.
    return largestRemainder(hits.map { Double($0) * (1 - f) + f * Double(b) }, total: total)
}

/// How many of the layer's top-`take` scores fall in each head, ranking by score (higher first),
/// then lower head, then lower position: every score above the take-th largest counts, and ties at
/// it are given out in (head, position) order. O(n) by quickselect instead of sorting the layer.
func layerHits(_ scores: [[Float]], heads: [Int], take: Int) -> [Int] {
    let all = heads.flatMap { scores[$0] }
    guard take > 0, !all.isEmpty else { return heads.map { _ in 0 } }
    guard take < all.count else { return heads.map { scores[$0].count } }
    let cut = kthLargest(all, take)
    var above = heads.map { h in scores[h].reduce(0) { $1 > cut ? $0 + 1 : $0 } }
    var ties = take - above.reduce(0, +)
    for (i, h) in heads.enumerated() where ties > 0 {
        let equal = scores[h].reduce(0) { $1 == cut ? $0 + 1 : $0 }
        let given = min(equal, ties)
        above[i] += given
        ties -= given
    }
    return above
}

public enum AdaKV {
    public static let method = ComposedMethod(
        name: "adakv", description: "AdaKV (Feng et al. 2024): a layer's budget moves to the heads that need it, window attention max-pooled (kernel 7)",
        // Max pooling with kernel 7 as in the AdaKV code: AdaptiveSnapKVCluster's defaults and the
        // compress configs of its LongBench runs (c*_w32_k7_maxpool). SnapKV's own default is avg, 5.
        scorer: WindowAttentionScorer(pooling: .max, kernel: 7), allocator: AdaKVAllocator())
}
