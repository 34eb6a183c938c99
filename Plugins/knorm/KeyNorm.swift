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
        let longest = view.headCounts.max() ?? 0
        out.withUnsafeMutableBufferPointer { results in
            let results = SendableBuffer(results)
            // One worker per core with a key buffer reused across its heads (no page faults per head).
            ComputeThreads.workers(for: heads) { worker, workers in
                let keys = UnsafeMutablePointer<Float>.allocate(capacity: max(1, longest * d))
                defer { keys.deallocate() }
                for h in stride(from: worker, to: heads, by: workers) {
                    view.read(h, values: false, into: keys)
                    results.buffer[h] = (0..<max(0, view.headCounts[h] - window)).map { t in -kvd_sum_squares(keys + t * d, d).squareRoot() }
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
