import CKVDKernels
import Dispatch
import Foundation
import KVDAttention
import KVDCore
import KVDPluginAPI

/// The norm DBudgetKV's stop measures the last query's attention with.
public enum DBudgetNorm: String, Sendable, CaseIterable {
    /// ‖a‖₂ over the candidates: the paper's and the released code's stop.
    case l2
    /// Σ a over the candidates, the attention mass (kvd's extension): one heavy token cannot hide
    /// the loss of many light ones, as it can under ℓ2 (docs/QUALITY.md, DBudgetKV).
    case l1
}

/// DBudgetKV — Ni et al., "DBudgetKV: Dynamic Budget in KV Cache Compression for Ensuring Optimal
/// Performance" (2025), following the released code (Patrick-Ni/ReFreeKV). A stop, not a budget:
/// tokens are pruned in the ranking's order (least important first) while the last query's
/// attention norm over the kept candidates stays within a relative loss T of the full one.
///
/// Per layer: a_h = softmax(q · K_hᵀ / √d + log-weights) over all tokens of KV head h, for the
/// window's last query q (the paper's), or with `stop_window` s > 1 the mean of the rows of its last
/// s queries (kvd's extension: the stop then measures the queries the ranking uses); GQA: also the
/// mean over the head's query heads. The candidates are the prefix tokens after the
/// first `sinks` (kept, outside the norm). With p = 2 (`norm: l2`) or 1 (`l1`):
/// base = mean_h ‖a_h[candidates]‖_p; kept(i) = mean_h ‖a_h[π_h[i:]]‖_p after dropping the i least
/// important; the cut i* is the largest i with (base − kept(i)) / base ≤ T, the same count for
/// every head of the layer. The ranking π_h orders the candidates by score ascending (NaN as −∞,
/// as the host's top-k), ties by position descending, so dropping the first i keeps exactly the
/// host's top-k. Everything is O(n) per head after the ranking.
public struct DBudgetStopper: PruneStopper {
    /// Defaults chosen on held-out text of SmolLM2-135M and Gemma-3-270M (docs/QUALITY.md,
    /// DBudgetKV): ℓ1 with 4 sinks, the stop over the whole observation window's mean attention,
    /// T = 0.07, with the ranking below (all window queries, max-pooled over 31 tokens). Of the
    /// variants measured this one comes closest to near-lossless on both models (KL ≤ 0.02 with
    /// ≥ 25 % dropped at 512–4096 tokens). The paper's stop is `norm: l2, sinks: 0,
    /// stop_window: 1`, whose T = 0.01 keeps 3–12 % of the KV at KL 0.3–0.7 on SmolLM2.
    public static let defaultThreshold = 0.07
    public static let defaultNorm = DBudgetNorm.l1
    public static let defaultSinks = 4
    public static let defaultStopWindow = 0

    public init() {}
    public let name = "dbudgetkv"
    public let needsQueries = true
    public let params: [ParamSpec] = [
        ParamSpec("threshold", .float, default: .float(defaultThreshold), min: 0, max: 1, "largest relative loss of the last query's attention norm, in (0, 1)"),
        ParamSpec("norm", .string, default: .string(defaultNorm.rawValue), "norm of the last query's attention the stop measures: l2 (the paper's) or l1 (attention mass, kvd's extension)"),
        ParamSpec("sinks", .int, default: .int(Int64(defaultSinks)), min: 0, max: 16_777_216, "tokens at the start of each head always kept and left out of the norm"),
        ParamSpec("stop_window", .int, default: .int(Int64(defaultStopWindow)), min: 0, max: 16_777_216,
                  "the stop measures the mean attention of the last this many observation queries (1: the last query, as the paper; 0, the default, or more than sent: all)"),
    ]

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        let t = params.float("threshold")
        guard t > 0, t < 1 else { throw .invalidArgument("dbudgetkv: threshold must be in (0, 1), got \(t)") }
        let norm = params.string("norm")
        guard DBudgetNorm(rawValue: norm) != nil else {
            throw .invalidArgument("parameter 'norm' must be l2 or l1, got '\(norm)'")
        }
    }

    public func sinks(_ params: ResolvedParams) -> Int { params.int("sinks") }

    public func floors(_ context: CompactionContext, window: Int, scores: [[Float]]) throws(KVDError) -> [Int] {
        let obs = try context.requireObservation()
        let view = context.view
        let m = view.layout
        let t = context.params.float("threshold")
        let norm = DBudgetNorm(rawValue: context.params.string("norm")) ?? .l2
        let sinks = context.params.int("sinks")
        let stopWindow = context.params.int("stop_window")
        let last = stopWindow <= 0 ? obs.window : min(stopWindow, obs.window)
        var floors = [Int](repeating: 0, count: m.headCount)
        guard kvd_blas_available() != 0 else {
            throw .internalError("dbudgetkv needs OpenBLAS (libopenblas.so.0), which could not be loaded; install libopenblas0")
        }
        // Suffix sums of the last query's attention (squared for ℓ2) along each head's pruning order, heads in parallel.
        // One scratch per worker (keys as f32, logits, a Double row), reused across its heads:
        // fresh multi-megabyte arrays per head cost a page fault per 4 KiB every time.
        var all = [[Double]](repeating: [], count: m.headCount)
        let longest = view.headCounts.max() ?? 0
        all.withUnsafeMutableBufferPointer { out in
            let out = SendableBuffer(out)
            ComputeThreads.workers(for: m.headCount) { worker, workers in
                let scratch = Scratch(tokens: longest, dim: m.headDim, rows: (m.qHeads / m.kvHeads) * last)
                defer { scratch.free() }
                for h in stride(from: worker, to: m.headCount, by: workers) {
                    out.buffer[h] = Self.suffixSums(
                        view, obs, h: h, window: window, sinks: sinks, norm: norm, last: last, scores: scores[h], scratch: scratch)
                }
            }
        }
        for layer in 0..<m.layers {
            let heads = (layer * m.kvHeads)..<((layer + 1) * m.kvHeads)
            let candidates = heads.map { max(0, view.headCounts[$0] - window - sinks) }
            let suffixes = heads.map { all[$0] }
            let longest = candidates.max() ?? 0
            func kept(_ i: Int) -> Double {
                suffixes.reduce(0) { acc, s in
                    let v = s[min(i, s.count - 1)]
                    return acc + (norm == .l2 ? v.squareRoot() : v)
                } / Double(suffixes.count)
            }
            let base = kept(0)
            var cut = 0
            if base <= 0 {
                cut = longest  // no attention on the candidates: nothing to lose
            } else {
                while cut < longest, (base - kept(cut + 1)) / base <= t { cut += 1 }
            }
            for (i, h) in heads.enumerated() { floors[h] = max(candidates[i] - cut, 0) }
        }
        return floors
    }

    /// The pruning order of a head's candidates (prefix positions `sinks ..< prefix`): score
    /// ascending, ties by position descending, NaN ranked as −∞ exactly as `topK` does, so dropping
    /// the first i leaves the set top-k keeps with budget `prefix − sinks − i`. (Compared raw, NaN
    /// is neither below nor above anything and the sort's order becomes arbitrary.)
    static func pruneOrder(_ scores: [Float], sinks: Int, prefix: Int) -> [Int] {
        // Sorted as one UInt64 per candidate, (score's order-preserving bits, ~position): the same
        // order as comparing (score ascending, position descending), ~4× faster than a sort with
        // a comparison closure. −0 counts as +0, as the float comparison has them equal.
        var keys = (min(sinks, prefix)..<prefix).map { i -> UInt64 in
            let s = scores[i]
            let v: Float = s.isNaN ? -.infinity : (s == 0 ? 0 : s)
            let bits = v.bitPattern
            let ordered = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
            return UInt64(ordered) << 32 | UInt64(UInt32.max - UInt32(i))
        }
        keys.sort()
        return keys.map { Int(UInt32.max - UInt32(truncatingIfNeeded: $0)) }
    }

    /// S[i] = Σ_{k ≥ i} a[π[k]]^p for i in 0...candidates (S[candidates] = 0), in Double; p = 2 for
    /// ℓ2 (the norm is its square root), 1 for ℓ1.
    static func suffixSums(
        _ view: SequenceView, _ obs: Observation, h: Int, window: Int, sinks: Int, norm: DBudgetNorm, last: Int,
        scores: [Float], scratch: Scratch
    ) -> [Double] {
        let prefix = view.headCounts[h] - window
        guard prefix - sinks > 0 else { return [0] }
        let attention = stopAttention(view, obs, h: h, last: last, scratch: scratch)
        let order = pruneOrder(scores, sinks: sinks, prefix: prefix)
        var suffix = [Double](repeating: 0, count: order.count + 1)
        for i in stride(from: order.count - 1, through: 0, by: -1) {
            let a = attention[order[i]]
            suffix[i] = suffix[i + 1] + (norm == .l2 ? a * a : a)
        }
        return suffix
    }

    /// Mean over the KV head's query heads and the window's last `last` queries of
    /// softmax(q · Kᵀ / √d + log-weights), causal (the last query sees all n tokens): one sgemm of those G·last queries against
    /// the head's keys, read into `scratch`.
    static func stopAttention(_ view: SequenceView, _ obs: Observation, h: Int, last: Int, scratch: Scratch) -> [Double] {
        let m = view.layout
        let n = view.headCounts[h]
        let d = m.headDim
        let group = m.qHeads / m.kvHeads
        let rows = group * last
        view.read(h, values: false, into: scratch.keys)
        let weights: [Float]? = view.hasLogWeights[h] ? view.logWeights[h] : nil
        let queries = scratch.queries
        for g in 0..<group {
            let head = obs.offset(layer: h / m.kvHeads, qHead: (h % m.kvHeads) * group + g)
            for r in 0..<last {
                let q = head + (obs.window - last + r) * d
                let dst = (g * last + r) * d
                for c in 0..<d { queries[dst + c] = obs.queries[q + c] }
            }
        }
        let logits = scratch.logits
        kvd_sgemm_abt(Int32(rows), Int32(n), Int32(d), 1 / Float(d).squareRoot(), queries, scratch.keys, logits)
        let row = scratch.row
        var out = [Double](repeating: 0, count: n)
        for g in 0..<rows {
            // Causal: query r of the last `last` sits at token n − last + r and sees the tokens up
            // to it (the last query sees all n).
            let seen = min(n, max(1, n - last + g % last + 1))
            // Double(logit) + Double(0) is Double(logit) (−0 becomes +0, whose exp is the same), so
            // a head without log-weights skips the add and gives the same values.
            if let weights {
                for j in 0..<seen { row[j] = Double(logits[g * n + j]) + Double(weights[j]) }
            } else {
                for j in 0..<seen { row[j] = Double(logits[g * n + j]) }
            }
            // The first element, then each larger one: what `Array.max()` did (a NaN first stays).
            var top = seen > 0 ? row[0] : 0
            for j in 1..<max(seen, 1) where top < row[j] { top = row[j] }
            var sum = 0.0
            for j in 0..<seen {
                row[j] = Foundation.exp(row[j] - top)
                sum += row[j]
            }
            for j in 0..<seen { out[j] += row[j] / sum / Double(rows) }
        }
        return out
    }

    /// One worker's buffers for `stopAttention`, sized for the longest head and `rows` queries.
    final class Scratch {
        let keys: UnsafeMutablePointer<Float>
        let queries: UnsafeMutablePointer<Float>
        let logits: UnsafeMutablePointer<Float>
        let row: UnsafeMutablePointer<Double>
        init(tokens: Int, dim: Int, rows: Int) {
            keys = .allocate(capacity: max(1, tokens * dim))
            queries = .allocate(capacity: max(1, rows * dim))
            logits = .allocate(capacity: max(1, rows * tokens))
            row = .allocate(capacity: max(1, tokens))
        }
        func free() {
            keys.deallocate()
            queries.deallocate()
            logits.deallocate()
            row.deallocate()
        }
    }
}

/// DBudgetKV's own ranking: window attention from the last `rank_window` observation queries (the
/// released code ranks with 8, unpooled: `rank_window: 8, pooling: none`). kvd's default ranks with
/// every window query and max-pools the scores over 31 tokens: future queries attend near where the
/// window's queries attend, and keeping those neighbourhoods whole is what let the ℓ1 stop drop
/// ≥ 25 % at KL ≤ 0.02 (docs/QUALITY.md, DBudgetKV).
public struct DBudgetRankScorer: TokenScorer {
    public static let defaultRankWindow = 0

    private let base = WindowAttentionScorer(pooling: .max, kernel: 31)
    public init() {}
    public let name = "dbudgetkv_rank"
    public let needsQueries = true
    public var params: [ParamSpec] {
        base.params + [
            ParamSpec("rank_window", .int, default: .int(Int64(Self.defaultRankWindow)), min: 0, max: 16_777_216,
                      "rank by the last this many observation queries (0, the default, or more than sent: all of them; 8 as released)"),
        ]
    }

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        try base.check(params, context)
    }

    public func scores(_ context: CompactionContext, window: Int) throws(KVDError) -> [[Float]] {
        let r = context.params.int("rank_window")
        let kind = PoolingKind(rawValue: context.params.string("pooling")) ?? .none
        return try WindowAttention.scores(
            context, window: window, last: r == 0 ? nil : min(r, window), pooling: kind, kernel: context.params.int("kernel"))
    }
}

public enum DBudgetKV {
    /// DBudgetKV alone: H2O-style ranking over the last `rank_window` queries, no budget of its
    /// own; the stop decides how many tokens each layer keeps.
    public static let method = ComposedMethod(
        name: "dbudgetkv", description: "DBudgetKV (Ni et al. 2025): prune by H2O ranking until the attention-norm loss reaches T",
        scorer: DBudgetRankScorer(), allocator: NoBudgetAllocator(), stopper: DBudgetStopper())
}
