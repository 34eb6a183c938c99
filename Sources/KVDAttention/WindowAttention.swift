import CKVDKernels
import Dispatch
import Foundation
import KVDCore
import KVDPluginAPI

/// Window attention, the score SnapKV, H2O, PyramidKV, AdaKV and HeadKV rank tokens by:
/// A = softmax(Q_win · Kᵀ / √d + log-weights) per query head, causal inside the window; a token's
/// score is the mean of A over the window queries and the G query heads sharing its KV head (GQA),
/// for the tokens before the window. One sgemm per KV head ([G·w, d] × [d, n]); heads run in
/// parallel on all cores.
public enum WindowAttention {
    /// Scores per (layer, KV head), layer-major: `counts[h] - window` values each.
    public static func scores(_ context: CompactionContext, window: Int) throws(KVDError) -> [[Float]] {
        let obs = try context.requireObservation()
        guard kvd_blas_available() != 0 else {
            throw .internalError("window attention needs OpenBLAS (libopenblas.so.0), which could not be loaded; install libopenblas0")
        }
        let view = context.view
        let m = view.layout
        let group = m.qHeads / m.kvHeads
        var out = [[Float]](repeating: [], count: m.headCount)
        out.withUnsafeMutableBufferPointer { results in
            let results = UnsafeSendable(results)
            DispatchQueue.concurrentPerform(iterations: m.headCount) { h in
                results.value[h] = headScores(view, obs, h: h, group: group, window: window)
            }
        }
        return out
    }

    static func headScores(_ view: SequenceView, _ obs: Observation, h: Int, group: Int, window w: Int) -> [Float] {
        let m = view.layout
        let n = view.headCounts[h]
        let d = m.headDim
        let prefix = n - w
        guard prefix > 0 else { return [] }
        let keys = view.keys(h)
        let logWeights = view.logWeights[h]
        let rows = group * w
        let layer = h / m.kvHeads
        let firstQ = obs.offset(layer: layer, qHead: (h % m.kvHeads) * group)
        var logits = [Float](repeating: 0, count: rows * n)
        obs.queries.withUnsafeBufferPointer { q in
            keys.withUnsafeBufferPointer { k in
                logits.withUnsafeMutableBufferPointer { c in
                    kvd_sgemm_abt(Int32(rows), Int32(n), Int32(d), 1 / Float(d).squareRoot(), q.baseAddress! + firstQ, k.baseAddress!, c.baseAddress!)
                }
            }
        }
        var scores = [Float](repeating: 0, count: prefix)
        let hasWeights = logWeights.contains { $0 != 0 }
        logits.withUnsafeMutableBufferPointer { c in
            scores.withUnsafeMutableBufferPointer { s in
                logWeights.withUnsafeBufferPointer { bias in
                    kvd_window_softmax_scores(c.baseAddress!, rows, n, w, hasWeights ? bias.baseAddress : nil, prefix, s.baseAddress!)
                }
            }
        }
        return scores
    }
}

/// Lets concurrentPerform's iterations write disjoint elements of one buffer.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
