import Foundation
import KVDAttention
import KVDCore
import KVDPluginAPI

/// HeadKV — Fu et al., "Not All Heads Matter: A Head-Level KV Cache Compression Method with
/// Integrated Retrieval and Reasoning" (ICLR 2025). Per-head budgets from head importance:
/// p = imp^temp / Σ imp^temp, pool = ⌊B/β⌋·L·H, min = B − ⌊B/β⌋, b = p·pool + min with the pool
/// split by largest remainder so Σ b = L·H·B exactly. After KVSharer the sums run over the heads of
/// layers holding their own cache; aliased heads get 0. Inside a head: window attention, max-pool 7.
public struct HeadKVAllocator: BudgetAllocator {
    public init() {}
    public let name = "headkv"
    public var params: [ParamSpec] {
        BudgetParams.specs + [
            ParamSpec(
                "scores", .string, default: .string(""),
                "head-score JSON file {\"layer-head\": [scores]}: in a request, a name relative to a files.directories entry; in a policy, relative to the config file"),
            ParamSpec("beta", .float, default: .float(1.01), min: 1, max: 1_000_000, "share kept by every head: min = B − ⌊B/β⌋; must be > 1"),
            ParamSpec("temperature", .float, default: .float(1), min: 0.001, max: 1000, "p ∝ importance^temperature"),
            ParamSpec("aggregate", .string, default: .string("mean"), "query-head scores → KV head: mean or max"),
        ]
    }

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        guard params.float("beta") > 1 else { throw .invalidArgument("headkv: beta must be > 1, got \(params.float("beta"))") }
        let aggregate = params.string("aggregate")
        guard aggregate == "mean" || aggregate == "max" else {
            throw .invalidArgument("headkv: aggregate must be mean or max, got '\(aggregate)'")
        }
        let path = params.string("scores")
        guard !path.isEmpty else { throw .invalidArgument("headkv: parameter 'scores' must name a head-score JSON file") }
        let m = context.layout
        _ = try HeadScores.load(param: "scores", path, files: context.files, layers: m?.layers, kvHeads: m?.kvHeads ?? 0, qHeads: m?.qHeads ?? 0)
    }

    public func budgets(_ context: CompactionContext, prefix: [Int], scores: [[Float]]?) throws(KVDError) -> [Int] {
        let m = context.layout
        let p = context.params
        let file = try HeadScores.load(
            param: "scores", p.string("scores"), files: context.files, layers: m.layers, kvHeads: m.kvHeads, qHeads: m.qHeads)
        let importance = file.kvImportance(kvHeads: m.kvHeads, aggregate: p.string("aggregate"))
        let b = BudgetParams.average(context, prefix: prefix)
        let shared = Int((Double(b) / p.float("beta")).rounded(.down))
        let floor = b - shared
        let weights = Self.weights(importance, temperature: p.float("temperature"))
        // Only heads of layers holding a cache share the pool and get the floor: an aliased layer's
        // heads keep nothing, so their importance-weighted share would be lost. p is renormalised
        // over the rest (largestRemainder divides by their sum).
        let heads = BudgetParams.budgetedHeads(context)
        let pool = largestRemainder(heads.map { weights[$0] }, total: shared * heads.count)
        var out = [Int](repeating: 0, count: m.headCount)
        for (i, h) in heads.enumerated() { out[h] = pool[i] + floor }
        return out
    }

    /// imp^temperature, up to a common factor (budgets only depend on ratios). Importances above 1
    /// are first divided by the largest, so imp^temperature cannot overflow to inf (3^1000 would,
    /// and inf / inf is NaN); importances of at most 1 (the calibration tool's) are used as they are,
    /// so budgets stay exactly those of the formula.
    public static func weights(_ importance: [Double], temperature: Double) -> [Double] {
        let top = importance.max() ?? 0
        guard top.isFinite else { return importance.map { $0.isFinite ? 0 : 1 } }
        let scale = top > 1 ? top : 1
        return importance.map { Foundation.pow($0 / scale, temperature) }
    }
}

public enum HeadKV {
    public static let method = ComposedMethod(
        name: "headkv", description: "HeadKV (Fu et al. 2025): per-head budgets from head importance scores, window attention max-pooled",
        scorer: WindowAttentionScorer(pooling: .max, kernel: 7), allocator: HeadKVAllocator())
}
