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
        return view.headCounts.indices.map { h in
            let keys = view.keys(h)
            return (0..<(view.headCounts[h] - window)).map { t in
                var sum: Float = 0
                for i in 0..<d { sum += keys[t * d + i] * keys[t * d + i] }
                return -sum.squareRoot()
            }
        }
    }
}

public enum KeyNorm {
    /// `knorm`: key-norm scores, uniform budgets, top-k plus window.
    public static let method = ComposedMethod(
        name: "knorm", description: "Key norm (Devoto et al. 2024): keep the keys with the lowest L2 norm",
        scorer: KeyNormScorer())
}
