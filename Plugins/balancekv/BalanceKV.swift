import CKVDKernels
import Dispatch
import Foundation
import KVDCore
import KVDPluginAPI

/// BalanceKV — Han et al., "BalanceKV: KV Cache Compression through Discrepancy Theory" (2025).
/// Keeps the first `sinks` and last `recent` tokens; the middle is halved `itrs` times by a
/// self-balancing random walk over blocks (`BalancedWalk`), and every kept middle token carries a
/// **log-weight**: the log of how many tokens it stands for. A runtime must add it to the token's
/// attention logit (kvd returns it with every Query; plain eviction is not equivalent). Seeded: the
/// same seed gives the same result. `variant=uniform` draws random signs instead (the baseline).
///
/// Weights compose: a token's log-weight is the sum over every compaction that kept it (a second
/// BalanceKV run multiplies its weights in; other methods keep weights as they are; appended tokens
/// start at 0).
public struct BalanceKV: CompactionMethod {
    public init() {}

    public let descriptor = MethodDescriptor(
        name: "balancekv",
        description: "BalanceKV (Han et al. 2025): discrepancy-based halving of the middle with per-token log-weights",
        params: [
            ParamSpec("sinks", .int, default: .int(32), min: 0, max: 16_777_216, "tokens kept at the start"),
            ParamSpec("recent", .int, default: .int(32), min: 0, max: 16_777_216, "tokens kept at the end"),
            ParamSpec("itrs", .int, default: .int(2), min: 1, max: 16, "halving rounds: the middle shrinks by 2^itrs"),
            ParamSpec("block", .int, default: .int(128), min: 2, max: 4096, "walk block size (a power of two)"),
            ParamSpec("gamma", .float, default: .float(4), min: 0, max: 1_000_000, "walk step: p = ½ − γ·Σ K s"),
            ParamSpec("tau", .float, default: .float(1), min: -1000, max: 1000, "key kernel temperature"),
            ParamSpec("beta", .float, default: .float(0), min: -1000, max: 1000, "key kernel offset"),
            ParamSpec("seed", .int, default: .int(1234), min: 0, max: 9.007_199_254_740_992e15, "random seed; same seed, same result"),
            ParamSpec("variant", .string, default: .string("balanced"), "balanced (the walk) or uniform (random signs, the baseline)"),
        ])

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        let block = params.int("block")
        guard block & (block - 1) == 0 else { throw .invalidArgument("balancekv: block must be a power of two, got \(block)") }
        let variant = params.string("variant")
        guard variant == "balanced" || variant == "uniform" else {
            throw .invalidArgument("balancekv: variant must be balanced or uniform, got '\(variant)'")
        }
    }

    public func plan(_ context: CompactionContext) throws(KVDError) -> MethodPlan {
        let p = context.params
        let view = context.view
        let m = view.layout
        let sinks = p.int("sinks"), recent = p.int("recent"), itrs = p.int("itrs")
        let minimum = 1 << itrs
        for (h, n) in view.headCounts.enumerated() where n > 0 {
            let middle = n - sinks - recent
            guard middle >= minimum else {
                throw .invalidArgument(
                    "balancekv: layer \(h / m.kvHeads) head \(h % m.kvHeads) holds \(n) tokens; with sinks \(sinks) and recent \(recent) "
                        + "its middle (\(max(middle, 0))) is too small to halve \(itrs) times (needs \(minimum))")
            }
        }
        if p.string("variant") == "balanced", kvd_blas_available() == 0 {
            throw .internalError("balancekv needs OpenBLAS (libopenblas.so.0), which could not be loaded; install libopenblas0")
        }
        let walk = BalancedWalk(
            block: p.int("block"), rounds: itrs, gamma: Float(p.float("gamma")), tau: Float(p.float("tau")),
            beta: Float(p.float("beta")), uniform: p.string("variant") == "uniform")
        let seed = UInt64(p.int("seed"))
        var kept = [[Int32]](repeating: [], count: m.headCount)
        var logWeights = [[Float]](repeating: [], count: m.headCount)
        // One key and one value buffer per worker, reused across its heads: fresh multi-megabyte
        // arrays per head cost a page fault per 4 KiB every time.
        let longest = view.headCounts.max() ?? 0
        kept.withUnsafeMutableBufferPointer { keptOut in
            logWeights.withUnsafeMutableBufferPointer { weightsOut in
                let keptOut = SendableBuffer(keptOut), weightsOut = SendableBuffer(weightsOut)
                ComputeThreads.workers(for: m.headCount) { worker, workers in
                    let keys = UnsafeMutablePointer<Float>.allocate(capacity: max(1, longest * m.headDim))
                    let values = UnsafeMutablePointer<Float>.allocate(capacity: max(1, longest * m.headDim))
                    defer {
                        keys.deallocate()
                        values.deallocate()
                    }
                    for h in stride(from: worker, to: m.headCount, by: workers) {
                        let (k, w) = Self.head(view, h, sinks: sinks, recent: recent, walk: walk, seed: seed, keys: keys, values: values)
                        keptOut.buffer[h] = k
                        weightsOut.buffer[h] = w
                    }
                }
            }
        }
        return MethodPlan(
            plan: CompactionPlan(kept: kept, logWeights: logWeights), sinks: sinks, window: recent,
            budgets: view.headCounts.map { max(0, $0 - sinks - recent) >> itrs }, reportBudgets: false)
    }

    /// Stream of head h: the seed mixed with the head's index, so heads draw independently.
    public static func generator(seed: UInt64, head h: Int) -> SplitMix64 {
        SplitMix64(seed: seed &+ UInt64(h) &* 0xD1B5_4A32_D192_ED03)
    }

    /// Head h's kept tokens and log-weights; `keys` and `values` are scratch for the longest head.
    static func head(
        _ view: SequenceView, _ h: Int, sinks: Int, recent: Int, walk: BalancedWalk, seed: UInt64,
        keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>
    ) -> ([Int32], [Float]) {
        let n = view.headCounts[h]
        guard n > 0 else { return ([], []) }
        let d = view.layout.headDim
        view.read(h, values: false, into: keys)
        view.read(h, values: true, into: values)
        let old = view.logWeights[h]
        let lo = sinks, hi = n - recent
        let middleWeights = (lo..<hi).map { Foundation.exp(old[$0]) }
        var rng = generator(seed: seed, head: h)
        let (order, weights) = walk.run(
            keys: keys + lo * d, values: values + lo * d, count: hi - lo, weights: middleWeights, dim: d, rng: &rng)
        // Plan indices must be sorted: sort the kept middle by position, weights alongside.
        let middle = zip(order, weights).sorted { $0.0 < $1.0 }
        let kept = (0..<lo).map(Int32.init) + middle.map { Int32(lo + $0.0) } + (hi..<n).map(Int32.init)
        let logs = (0..<lo).map { old[$0] } + middle.map { old[lo + $0.0] + Foundation.log($0.1) } + (hi..<n).map { old[$0] }
        return (kept, logs)
    }
}
