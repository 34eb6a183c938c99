import AdaKV
import H2O
import HeadKV
import KVDAttention
import KVDCore
import KVDPluginAPI
import KeyNorm
import PyramidKV
import SnapKV
import StreamingLLM

/// The built-in methods and the stages a config policy can combine.
public enum Catalog {
    public static var builtinMethods: [any CompactionMethod] {
        [StreamingLLM(), KeyNorm.method, SnapKV.method, H2O.method, PyramidKV.method, AdaKV.method, HeadKV.method]
    }

    /// Scorers by name, for `policies: {name: {scorer: ..., allocator: ...}}`.
    public static let scorers: [String: any TokenScorer] = [
        "snapkv": WindowAttentionScorer(pooling: .avg, kernel: 5),
        "window_attention": WindowAttentionScorer(pooling: .avg, kernel: 5),
        "h2o": WindowAttentionScorer(pooling: .none, kernel: 1),
        "headkv": WindowAttentionScorer(pooling: .max, kernel: 7),
        "knorm": KeyNormScorer(),
    ]

    /// Allocators by name.
    public static let allocators: [String: any BudgetAllocator] = [
        "uniform": UniformAllocator(),
        "pyramidkv": PyramidAllocator(),
        "adakv": AdaKVAllocator(),
        "headkv": HeadKVAllocator(),
    ]

    /// A method composed of named stages, or NOT_FOUND naming what exists.
    public static func compose(scorer: String, allocator: String?) throws(KVDError) -> ComposedMethod {
        guard let s = scorers[scorer] else {
            throw .notFound("unknown scorer '\(scorer)'; available: \(scorers.keys.sorted().joined(separator: ", "))")
        }
        let allocatorName = allocator ?? "uniform"
        guard let a = allocators[allocatorName] else {
            throw .notFound("unknown allocator '\(allocatorName)'; available: \(allocators.keys.sorted().joined(separator: ", "))")
        }
        return ComposedMethod(
            name: "\(scorer)+\(allocatorName)", description: "scorer \(scorer), allocator \(allocatorName), top-k selector",
            scorer: s, allocator: a)
    }
}
