import AdaKV
import BalanceKV
import DBudgetKV
import H2O
import HeadKV
import KVDAttention
import KVDCore
import KVDPluginAPI
import KVSharer
import KeyNorm
import PyramidKV
import SnapKV
import StreamingLLM

/// The built-in methods and the stages a config policy can combine.
public enum Catalog {
    public static var builtinMethods: [any CompactionMethod] {
        [StreamingLLM(), KeyNorm.method, SnapKV.method, H2O.method, PyramidKV.method, AdaKV.method, HeadKV.method, BalanceKV(), DBudgetKV.method, KVSharer()]
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
        "none": NoBudgetAllocator(),
    ]

    /// Stoppers by name, for `policies: {name: {..., stopper: dbudgetkv}}`.
    public static let stoppers: [String: any PruneStopper] = [
        "dbudgetkv": DBudgetStopper(),
    ]

    /// A method composed of named stages, or NOT_FOUND naming what exists.
    /// `method` (a ranking method) with `stopper` added, or an error saying why the combination is invalid.
    public static func stop(_ method: any CompactionMethod, with stopper: String) throws(KVDError) -> ComposedMethod {
        guard let s = stoppers[stopper] else {
            throw .notFound("unknown stopper '\(stopper)'; available: \(stoppers.keys.sorted().joined(separator: ", "))")
        }
        guard let ranked = method as? ComposedMethod else {
            throw .invalidArgument(
                "stopper '\(stopper)' needs a ranking to stop on; method '\(method.descriptor.name)' does not rank tokens "
                    + "(valid: a method made of a scorer and an allocator, such as snapkv, h2o, knorm, pyramidkv, adakv, headkv)")
        }
        guard ranked.stopper == nil else { throw .invalidArgument("method '\(method.descriptor.name)' already has a stopper") }
        return ranked.with(stopper: s)
    }

    /// A layer sharer on its own (a policy with only `sharer:`).
    public static func sharerOnly(_ name: String) throws(KVDError) -> any CompactionMethod {
        guard name == "kvsharer" else { throw .notFound("unknown sharer '\(name)'; available: kvsharer") }
        return KVSharer()
    }

    /// `method` followed by layer sharing. A sharer comes last: after it nothing may compact in the
    /// same request (aliased layers hold no tokens).
    public static func share(_ method: any CompactionMethod, with name: String) throws(KVDError) -> any CompactionMethod {
        guard name == "kvsharer" else { throw .notFound("unknown sharer '\(name)'; available: kvsharer") }
        guard !(method is KVSharer), !(method is SharedLayers) else {
            throw .invalidArgument("method '\(method.descriptor.name)' already shares layers")
        }
        return SharedLayers(method)
    }

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
