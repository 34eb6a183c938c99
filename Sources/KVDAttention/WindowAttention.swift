import CKVDKernels
import Dispatch
import Foundation
import KVDCore
import KVDPluginAPI

/// Window attention, the score SnapKV, H2O, PyramidKV, AdaKV and HeadKV rank tokens by:
/// A = softmax(Q_win · Kᵀ / √d + log-weights) per query head, causal inside the window; a token's
/// score is the mean of A over the window queries and the G query heads sharing its KV head (GQA),
/// for the tokens before the window. One sgemm per KV head ([G·w, d] × [d, n]); heads run in
/// parallel on `ComputeThreads.count` cores.
public enum WindowAttention {
    /// Scores per (layer, KV head), layer-major: `counts[h] - window` values each. `last` (1 ≤ last ≤
    /// window) ranks with only the last `last` queries of the window (DBudgetKV's ranking window);
    /// nil uses them all. `pooling` smooths each head's scores on the thread that made them (a
    /// serial pass over every head afterwards cost 2-thread runs ~3% of their time).
    public static func scores(
        _ context: CompactionContext, window: Int, last: Int? = nil, pooling: PoolingKind = .none, kernel: Int = 1
    ) throws(KVDError) -> [[Float]] {
        let obs = try context.requireObservation()
        guard kvd_blas_available() != 0 else {
            throw .internalError("window attention needs OpenBLAS (libopenblas.so.0), which could not be loaded; install libopenblas0")
        }
        let view = context.view
        let m = view.layout
        let group = m.qHeads / m.kvHeads
        var out = [[Float]](repeating: [], count: m.headCount)
        // One worker per core, each with its own key and logit buffers reused across its heads:
        // fresh multi-megabyte buffers per head would cost a page fault per 4 KiB every time.
        let longest = view.headCounts.max() ?? 0
        let ranking = min(max(last ?? window, 1), max(window, 1))
        out.withUnsafeMutableBufferPointer { results in
            let results = SendableBuffer(results)
            ComputeThreads.workers(for: m.headCount) { worker, workers in
                let keys = UnsafeMutablePointer<Float>.allocate(capacity: max(1, longest * m.headDim))
                let logits = UnsafeMutablePointer<Float>.allocate(capacity: max(1, group * window * longest))
                // The group's last `ranking` queries, gathered: each query head's rows are contiguous
                // in the observation, so a sub-window is not one block for the sgemm.
                let gathered = UnsafeMutablePointer<Float>.allocate(capacity: max(1, group * ranking * m.headDim))
                defer {
                    keys.deallocate()
                    logits.deallocate()
                    gathered.deallocate()
                }
                for h in stride(from: worker, to: m.headCount, by: workers) {
                    results.buffer[h] = pool(
                        headScores(view, obs, h: h, group: group, window: window, ranking: ranking, keys: keys, logits: logits, gathered: gathered),
                        kind: pooling, kernel: kernel)
                }
            }
        }
        return out
    }

    /// Scores of head `h` from the last `ranking` of its `w` window queries; `keys`, `logits` and
    /// `gathered` are scratch buffers large enough for the longest head.
    static func headScores(
        _ view: SequenceView, _ obs: Observation, h: Int, group: Int, window w: Int, ranking r: Int,
        keys: UnsafeMutablePointer<Float>, logits: UnsafeMutablePointer<Float>, gathered: UnsafeMutablePointer<Float>
    ) -> [Float] {
        let m = view.layout
        let n = view.headCounts[h]
        let d = m.headDim
        let prefix = n - w
        guard prefix > 0 else { return [] }
        view.read(h, values: false, into: keys)
        let hasWeights = view.hasLogWeights[h]
        let logWeights = hasWeights ? view.logWeights[h] : []
        let rows = group * r
        let layer = h / m.kvHeads
        let firstQ = obs.offset(layer: layer, qHead: (h % m.kvHeads) * group)
        obs.queries.withUnsafeBufferPointer { q in
            var a = q.baseAddress! + firstQ
            if r < w {
                for g in 0..<group {
                    (gathered + g * r * d).update(from: a + (g * w + w - r) * d, count: r * d)
                }
                a = UnsafePointer(gathered)
            }
            kvd_sgemm_abt(Int32(rows), Int32(n), Int32(d), 1 / Float(d).squareRoot(), a, keys, logits)
        }
        // Query i of the last r sits at index n − r + i, as it did at n − w + (w − r + i): the kernel's
        // causal mask with window r is the same mask; only the n − w prefix tokens get scores.
        var scores = [Float](repeating: 0, count: prefix)
        scores.withUnsafeMutableBufferPointer { s in
            logWeights.withUnsafeBufferPointer { bias in
                kvd_window_softmax_scores(logits, rows, n, r, hasWeights ? bias.baseAddress : nil, prefix, s.baseAddress!)
            }
        }
        return scores
    }
}

