import CKVDKernels
import Foundation
import KVDAttention
import KVDCore
import KVDPluginAPI

/// DBudgetKV — Ni et al., "DBudgetKV: Dynamic Budget in KV Cache Compression for Ensuring Optimal
/// Performance" (2025), following the released code (Patrick-Ni/ReFreeKV). A stop, not a budget:
/// tokens are pruned in the ranking's order (least important first) while the last query's
/// attention norm over the kept candidates stays within a relative loss T of the full one.
///
/// Per layer: a_h = softmax(q_last · K_hᵀ / √d + log-weights) over all tokens of KV head h (GQA:
/// the mean of its query heads' attention rows); base = mean_h ‖a_h[candidates]‖₂;
/// kept(i) = mean_h √(Σ_{j ∈ π_h[i:]} a_h[j]²) after dropping the i least important; the cut i* is
/// the largest i with (base − kept(i)) / base ≤ T, the same count for every head of the layer. The
/// ranking π_h orders the candidates by score ascending, ties by position descending (so dropping
/// the first i keeps exactly the host's top-k). Everything is O(n) per head after the ranking.
public struct DBudgetStopper: PruneStopper {
    public init() {}
    public let name = "dbudgetkv"
    public let needsQueries = true
    public let params: [ParamSpec] = [
        ParamSpec("threshold", .float, default: .float(0.05), min: 0, max: 1, "largest relative loss of the last query's attention norm, in (0, 1)"),
    ]

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        let t = params.float("threshold")
        guard t > 0, t < 1 else { throw .invalidArgument("dbudgetkv: threshold must be in (0, 1), got \(t)") }
    }

    public func floors(_ context: CompactionContext, window: Int, scores: [[Float]]) throws(KVDError) -> [Int] {
        let obs = try context.requireObservation()
        let view = context.view
        let m = view.layout
        let t = context.params.float("threshold")
        var floors = [Int](repeating: 0, count: m.headCount)
        for layer in 0..<m.layers {
            let heads = (layer * m.kvHeads)..<((layer + 1) * m.kvHeads)
            let prefix = heads.map { max(0, view.headCounts[$0] - window) }
            // Suffix sums of squared last-query attention along each head's pruning order.
            let suffixes = heads.map { h in Self.suffixSquares(view, obs, h: h, window: window, scores: scores[h]) }
            let longest = prefix.max() ?? 0
            func kept(_ i: Int) -> Double {
                suffixes.reduce(0) { $0 + $1[min(i, $1.count - 1)].squareRoot() } / Double(suffixes.count)
            }
            let base = kept(0)
            var cut = 0
            if base <= 0 {
                cut = longest  // no attention outside the window: nothing to lose
            } else {
                while cut < longest, (base - kept(cut + 1)) / base <= t { cut += 1 }
            }
            for (i, h) in heads.enumerated() { floors[h] = max(prefix[i] - cut, 0) }
        }
        return floors
    }

    /// S[i] = Σ_{k ≥ i} a[π[k]]² for i in 0...prefix (S[prefix] = 0), in Double.
    static func suffixSquares(_ view: SequenceView, _ obs: Observation, h: Int, window: Int, scores: [Float]) -> [Double] {
        let m = view.layout
        let n = view.headCounts[h]
        let prefix = n - window
        guard prefix > 0 else { return [0] }
        let attention = lastQueryAttention(view, obs, h: h)
        let order = (0..<prefix).sorted { a, b in scores[a] != scores[b] ? scores[a] < scores[b] : a > b }
        var suffix = [Double](repeating: 0, count: prefix + 1)
        for i in stride(from: prefix - 1, through: 0, by: -1) {
            let a = attention[order[i]]
            suffix[i] = suffix[i + 1] + a * a
        }
        _ = m
        return suffix
    }

    /// Mean over the KV head's query heads of softmax(q_last · Kᵀ / √d + log-weights), all n tokens.
    static func lastQueryAttention(_ view: SequenceView, _ obs: Observation, h: Int) -> [Double] {
        let m = view.layout
        let n = view.headCounts[h]
        let d = m.headDim
        let group = m.qHeads / m.kvHeads
        let keys = view.keys(h)
        let weights = view.logWeights[h]
        var out = [Double](repeating: 0, count: n)
        for g in 0..<group {
            let q = obs.offset(layer: h / m.kvHeads, qHead: (h % m.kvHeads) * group + g) + (obs.window - 1) * d
            var logits = [Double](repeating: 0, count: n)
            for j in 0..<n {
                var dot: Float = 0
                for c in 0..<d { dot += obs.queries[q + c] * keys[j * d + c] }
                logits[j] = Double(dot) / Double(d).squareRoot() + Double(weights[j])
            }
            let top = logits.max() ?? 0
            let e = logits.map { Foundation.exp($0 - top) }
            let sum = e.reduce(0, +)
            for j in 0..<n { out[j] += e[j] / sum / Double(group) }
        }
        return out
    }
}

public enum DBudgetKV {
    /// DBudgetKV alone: H2O-style ranking (window attention, no pooling), no budget of its own; the
    /// stop decides how many tokens each layer keeps.
    public static let method = ComposedMethod(
        name: "dbudgetkv", description: "DBudgetKV (Ni et al. 2025): prune by H2O ranking until the attention-norm loss reaches T",
        scorer: WindowAttentionScorer(pooling: .none, kernel: 1), allocator: NoBudgetAllocator(), stopper: DBudgetStopper())
}
