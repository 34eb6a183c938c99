import KVDAttention
import KVDCore
import KVDPluginAPI

/// PyramidKV — Cai et al., "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
/// Funneling" (2024). Lower layers keep more: with average budget B and β, min = B/β,
/// max = 2B − min, b_l = max − l·(max − min)/(L − 1); every head of layer l gets b_l (rounded by
/// largest remainder over layers so the total is exactly L·H·B). After KVSharer, l counts only the
/// layers holding their own cache (L of them); aliased layers get 0.
///
/// When max would pass the prefix n (the tokens before the window), the top is clamped to n and the
/// bottom raised to 2B − n, as `PyramidKVCluster.update_kv` in the released code
/// (pyramidkv/pyramidkv_utils.py: `if max_num >= q_len - window_size: max_num = q_len -
/// window_size; min_num = 2·(max_capacity_prompt − window_size) − max_num`). The line still
/// averages B, so what the top layers cannot use goes to the deeper ones instead of being lost.
/// n is the longest head's prefix (all heads have the same unless an earlier compaction made them
/// uneven; a shorter head still keeps at most its own prefix).
public struct PyramidAllocator: BudgetAllocator {
    public init() {}
    public let name = "pyramidkv"
    public var params: [ParamSpec] {
        BudgetParams.specs + [ParamSpec("beta", .float, default: .float(20), min: 1, max: 1_000_000, "pyramid steepness: the top layer keeps budget/beta")]
    }

    public func budgets(_ context: CompactionContext, prefix: [Int], scores: [[Float]]?) throws(KVDError) -> [Int] {
        let m = context.layout
        let b = BudgetParams.average(context, prefix: prefix)
        // The line runs over the layers that hold a cache, in depth order: an aliased layer keeps
        // nothing, so a step of the line spent on it would be lost and the kept total fall short of
        // L'·H·B (L' such layers). Aliased heads get 0.
        let layers = BudgetParams.budgetedLayers(context)
        let line = pyramidBudgets(layers: layers.count, budget: b, beta: context.params.float("beta"), prefix: prefix.max() ?? 0)
        var perLayer = [Int](repeating: 0, count: m.layers)
        for (i, l) in layers.enumerated() { perLayer[l] = line[i] }
        return (0..<m.headCount).map { perLayer[$0 / m.kvHeads] }
    }
}

/// b_l for each layer, Σ_l b_l = L·B, by largest remainder (ties to the lower layer). The line's
/// shares are computed in integers when they can be — clamped: b_l·(L − 1) = n(L − 1) − 2l(n − B);
/// unclamped with β = p/q (a decimal of ≤ 9 places): b_l ∝ (2p − q)(L − 1) − 2l(p − q) — so equal
/// remainders stay equal and the lower layer gets the extra token; floating point otherwise.
public func pyramidBudgets(layers: Int, budget b: Int, beta: Double, prefix n: Int) -> [Int] {
    guard layers > 1 else { return [Int](repeating: b, count: max(0, layers)) }
    let total = b * layers
    let steps = layers - 1
    let low = Double(b) / beta
    let high = 2 * Double(b) - low
    let clamped = high >= Double(n)
    var numerators: [Int]? = []
    for l in 0..<layers {
        let value: Int?
        if clamped {
            value = sub(mul(n, steps), mul(2 * l, sub(n, b)))
        } else if let (p, q) = decimalFraction(beta) {
            value = sub(mul(sub(mul(2, p), q), steps), mul(2 * l, sub(p, q)))
        } else {
            value = nil
        }
        guard let value else { numerators = nil; break }
        numerators?.append(value)
    }
    if let numerators, let shares = largestRemainder(numerators: numerators, total: total) { return shares }
    let top = clamped ? Double(n) : high
    let bottom = clamped ? 2 * Double(b) - Double(n) : low
    return largestRemainder((0..<layers).map { top - Double($0) * (top - bottom) / Double(steps) }, total: total)
}

// Overflow-checked Int steps (nil propagates): absurd parameters fall back to floating point
// instead of trapping.
private func mul(_ a: Int?, _ b: Int?) -> Int? {
    guard let a, let b else { return nil }
    let (r, overflow) = a.multipliedReportingOverflow(by: b)
    return overflow ? nil : r
}

private func sub(_ a: Int?, _ b: Int?) -> Int? {
    guard let a, let b else { return nil }
    let (r, overflow) = a.subtractingReportingOverflow(b)
    return overflow ? nil : r
}

public enum PyramidKV {
    public static let method = ComposedMethod(
        name: "pyramidkv", description: "PyramidKV (Cai et al. 2024): per-layer budgets shrinking with depth, SnapKV scores",
        scorer: WindowAttentionScorer(pooling: .avg, kernel: 5), allocator: PyramidAllocator())
}
