import CKVDKernels
import Dispatch
import Foundation
import KVDCore
import KVDPluginAPI

/// Key norm — Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache
/// Compression" (EMNLP 2024). Score = −‖k_t‖₂: keys with a low norm draw attention and are kept.
/// Needs no queries.
public struct KeyNormScorer: TokenScorer {
    public init() {}
    public let name = "knorm"
    public let params: [ParamSpec] = []

    public func scores(_ context: CompactionContext, window: Int) throws(KVDError) -> [[Float]] {
        let view = context.view
        let d = view.layout.headDim
        var out = [[Float]](repeating: [], count: view.headCounts.count)
        let heads = view.headCounts.count
        out.withUnsafeMutableBufferPointer { results in
            let results = SendableBuffer(results)
            // Each page's keys are read once, in place, by a dtype-aware kernel (no f32 copy).
            ComputeThreads.forEach(heads) { h in
                let n = max(0, view.headCounts[h] - window)
                // No scores (an aliased layer's empty head, or a head no longer than the window):
                // `[]`, because Array(unsafeUninitializedCapacity: 0) writes its count into the
                // runtime's shared empty-array storage, a data race between these threads (TSan).
                guard n > 0 else { results.buffer[h] = []; return }
                results.buffer[h] = [Float](unsafeUninitializedCapacity: n) { scores, initialized in
                    view.forEachStoredPage(h, values: false, tokens: n) { rows, dtype, first, count in
                        kvd_row_sum_squares(rows, dtype.kvdCode, count, d, scores.baseAddress! + first)
                    }
                    for t in 0..<n { scores[t] = -scores[t].squareRoot() }
                    initialized = n
                }
            }
        }
        return out
    }
}

public enum KeyNorm {
    /// `knorm`: key-norm scores, uniform budgets, top-k plus window.
    public static let method = ComposedMethod(
        name: "knorm", description: "Key norm (Devoto et al. 2024): keep the keys with the lowest L2 norm",
        scorer: KeyNormScorer())
}
