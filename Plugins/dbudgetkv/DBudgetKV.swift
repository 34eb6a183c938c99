import CKVDKernels
import Dispatch
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
        guard kvd_blas_available() != 0 else {
            throw .internalError("dbudgetkv needs OpenBLAS (libopenblas.so.0), which could not be loaded; install libopenblas0")
        }
        // Suffix sums of squared last-query attention along each head's pruning order, heads in parallel.
        var all = [[Double]](repeating: [], count: m.headCount)
        all.withUnsafeMutableBufferPointer { out in
            let out = SendableBuffer(out)
            ComputeThreads.forEach(m.headCount) { h in
                out.buffer[h] = Self.suffixSquares(view, obs, h: h, window: window, scores: scores[h])
            }
        }
        for layer in 0..<m.layers {
            let heads = (layer * m.kvHeads)..<((layer + 1) * m.kvHeads)
            let prefix = heads.map { max(0, view.headCounts[$0] - window) }
            let suffixes = heads.map { all[$0] }
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

    /// Mean over the KV head's query heads of softmax(q_last · Kᵀ / √d + log-weights), all n tokens:
    /// one sgemm of the G last queries against the head's keys.
    static func lastQueryAttention(_ view: SequenceView, _ obs: Observation, h: Int) -> [Double] {
        let m = view.layout
        let n = view.headCounts[h]
        let d = m.headDim
        let group = m.qHeads / m.kvHeads
        let keys = view.keys(h)
        let weights = view.logWeights[h]
        var queries = [Float](repeating: 0, count: group * d)
        for g in 0..<group {
            let q = obs.offset(layer: h / m.kvHeads, qHead: (h % m.kvHeads) * group + g) + (obs.window - 1) * d
            for c in 0..<d { queries[g * d + c] = obs.queries[q + c] }
        }
        var logits = [Float](repeating: 0, count: group * n)
        kvd_sgemm_abt(Int32(group), Int32(n), Int32(d), 1 / Float(d).squareRoot(), queries, keys, &logits)
        var out = [Double](repeating: 0, count: n)
        for g in 0..<group {
            var row = (0..<n).map { Double(logits[g * n + $0]) + Double(weights[$0]) }
            let top = row.max() ?? 0
            var sum = 0.0
            for j in 0..<n {
                row[j] = Foundation.exp(row[j] - top)
                sum += row[j]
            }
            for j in 0..<n { out[j] += row[j] / sum / Double(group) }
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
