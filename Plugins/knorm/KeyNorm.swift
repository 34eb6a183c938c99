import CKVDKernels
import Dispatch
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
        out.withUnsafeMutableBufferPointer { results in
            let results = SendableBuffer(results)
            // Heads are independent: spread them over the cores.
            DispatchQueue.concurrentPerform(iterations: view.headCounts.count) { h in
                let keys = view.keys(h)
                results.buffer[h] = keys.withUnsafeBufferPointer { k in
                    (0..<(view.headCounts[h] - window)).map { t in -kvd_sum_squares(k.baseAddress! + t * d, d).squareRoot() }
                }
            }
        }
        return out
    }
}

/// Lets concurrentPerform's iterations write disjoint elements of one buffer.
struct SendableBuffer<T>: @unchecked Sendable {
    let buffer: UnsafeMutableBufferPointer<T>
    init(_ buffer: UnsafeMutableBufferPointer<T>) { self.buffer = buffer }
}

public enum KeyNorm {
    /// `knorm`: key-norm scores, uniform budgets, top-k plus window.
    public static let method = ComposedMethod(
        name: "knorm", description: "Key norm (Devoto et al. 2024): keep the keys with the lowest L2 norm",
        scorer: KeyNormScorer())
}
