import Foundation
import KVDCore
import KVDPluginAPI

/// KVSharer — Yang et al., "KVSharer: Efficient Inference via Layer-Wise Dissimilar KV Cache
/// Sharing" (2024). Layers alias an earlier layer's cache: an aliased layer stores no pages and
/// its queries read the owner's keys and values. kvd applies a map; choosing it needs the model
/// (the hidden-state check), so it comes from a calibration tool — which can ask kvd to rank layer
/// pairs (RankLayers) from the KV it holds.
///
/// `alias_map` is "layer:owner,layer:owner" (e.g. "5:3,7:2"). Rules (checked by the sequence):
/// layers in range, no self-alias, owner earlier than the layer, chains resolved.
public struct KVSharer: CompactionMethod {
    public init() {}

    public static let mapParam = ParamSpec(
        "alias_map", .string, default: .string(""), "layer aliases \"layer:owner,...\"; each owner an earlier layer")

    public let descriptor = MethodDescriptor(
        name: "kvsharer", description: "KVSharer (Yang et al. 2024): layers alias an earlier layer's cache and free their own",
        params: [KVSharer.mapParam])

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        let map = try Self.parse(params.string("alias_map"))
        guard !map.isEmpty else { throw .invalidArgument("kvsharer: alias_map is empty; give \"layer:owner,...\"") }
        if let m = context.layout {
            for (layer, owner) in map where layer >= m.layers || owner >= m.layers {
                throw .invalidArgument("kvsharer: alias \(layer):\(owner) is outside layers 0..<\(m.layers) of model '\(m.name)'")
            }
        }
    }

    /// Keeps every token; the aliases do the freeing.
    public func plan(_ context: CompactionContext) throws(KVDError) -> MethodPlan {
        let kept = context.view.headCounts.map { (0..<Int32($0)).map { $0 } }
        var p = MethodPlan(plan: CompactionPlan(kept: kept))
        p.aliases = try Self.parse(context.params.string("alias_map"))
        return p
    }

    /// "5:3,7:2" → [5: 3, 7: 2]; malformed text, negative numbers or a layer given twice are errors.
    public static func parse(_ text: String) throws(KVDError) -> [Int: Int] {
        var map: [Int: Int] = [:]
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            let pair = part.split(separator: ":")
            guard pair.count == 2, let l = Int(pair[0]), let o = Int(pair[1]), l >= 0, o >= 0 else {
                throw .invalidArgument("kvsharer: alias '\(part)' is not \"layer:owner\" with non-negative integers")
            }
            guard map[l] == nil else { throw .invalidArgument("kvsharer: layer \(l) is aliased twice") }
            map[l] = o
        }
        return map
    }
}

/// Another method followed by layer sharing: it compacts, then the aliases free whole layers.
public struct SharedLayers: CompactionMethod {
    let inner: any CompactionMethod

    public init(_ inner: any CompactionMethod) { self.inner = inner }

    public var descriptor: MethodDescriptor {
        MethodDescriptor(
            name: "\(inner.descriptor.name)+kvsharer", description: "\(inner.descriptor.description); then KVSharer layer aliases",
            params: inner.descriptor.params + [KVSharer.mapParam])
    }

    public var needsQueries: Bool { inner.needsQueries }

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        try inner.check(params, context)
        try KVSharer().check(params, context)
    }

    public func plan(_ context: CompactionContext) throws(KVDError) -> MethodPlan {
        var p = try inner.plan(context)
        p.aliases = try KVSharer.parse(context.params.string("alias_map"))
        return p
    }
}

/// Layer-pair distances for KVSharer calibration: D(i, j) = ½·(mean over heads and tokens of
/// ‖K̄_i − K̄_j‖₂ + the same for V̄), i > j, where K̄ and V̄ are already averaged over the samples.
public enum LayerDistance {
    /// `keys[l]` / `values[l]`: layer l's mean cache, `[heads · tokens · dim]` as f32.
    public static func rank(keys: [[Float]], values: [[Float]], heads: Int, tokens: Int, dim: Int) -> [(layer: Int, other: Int, distance: Double)] {
        let rows = heads * tokens
        func meanRowDistance(_ a: [Float], _ b: [Float]) -> Double {
            guard rows > 0 else { return 0 }
            var total = 0.0
            for r in 0..<rows {
                var sq = 0.0
                for c in 0..<dim {
                    let diff = Double(a[r * dim + c]) - Double(b[r * dim + c])
                    sq += diff * diff
                }
                total += sq.squareRoot()
            }
            return total / Double(rows)
        }
        var pairs: [(layer: Int, other: Int, distance: Double)] = []
        for i in keys.indices {
            for j in 0..<i {
                let d = 0.5 * (meanRowDistance(keys[i], keys[j]) + meanRowDistance(values[i], values[j]))
                pairs.append((i, j, d))
            }
        }
        return pairs.sorted { a, b in
            a.distance != b.distance ? a.distance > b.distance : (a.layer != b.layer ? a.layer < b.layer : a.other < b.other)
        }
    }
}
