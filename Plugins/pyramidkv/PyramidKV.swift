import KVDAttention
import KVDCore
import KVDPluginAPI

/// PyramidKV — Cai et al., "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
/// Funneling" (2024). Lower layers keep more: with average budget B and β, min = B/β,
/// max = 2B − min, b_l = max − l·(max − min)/(L − 1); every head of layer l gets b_l (rounded by
/// largest remainder over layers so the total is exactly L·H·B).
public struct PyramidAllocator: BudgetAllocator {
    public init() {}
    public let name = "pyramidkv"
    public var params: [ParamSpec] {
        BudgetParams.specs + [ParamSpec("beta", .float, default: .float(20), min: 1, max: 1_000_000, "pyramid steepness: the top layer keeps budget/beta")]
    }

    public func budgets(_ context: CompactionContext, prefix: [Int], scores: [[Float]]?) throws(KVDError) -> [Int] {
        let m = context.layout
        let b = Double(BudgetParams.average(context.params, prefix: prefix))
        let beta = context.params.float("beta")
        let low = b / beta
        let high = 2 * b - low
        let perLayer: [Double] = (0..<m.layers).map { l in
            m.layers == 1 ? b : high - Double(l) * (high - low) / Double(m.layers - 1)
        }
        // b_l is what every head of layer l keeps; rounding by largest remainder keeps Σ_l b_l = L·B.
        let perHead = largestRemainder(perLayer, total: Int(b) * m.layers)
        return (0..<m.headCount).map { perHead[$0 / m.kvHeads] }
    }
}

public enum PyramidKV {
    public static let method = ComposedMethod(
        name: "pyramidkv", description: "PyramidKV (Cai et al. 2024): per-layer budgets shrinking with depth, SnapKV scores",
        scorer: WindowAttentionScorer(pooling: .avg, kernel: 5), allocator: PyramidAllocator())
}
