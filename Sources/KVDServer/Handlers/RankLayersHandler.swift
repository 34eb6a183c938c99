import KVDCore
import KVDPluginAPI
import KVDProtocol
import KVSharer

/// RankLayers: layer pairs by the distance of their caches averaged over a calibration set of
/// sequences, most dissimilar first (KVSharer). Each sequence is read on its own queue.
enum RankLayersHandler {
    static func handle(_ entries: [SequenceEntry], _ store: TenantStore) throws(KVDError) -> Kvd_V1_RankLayersResponse {
        let layout = entries[0].sync { $0.sequence.layout }
        var keySums: [[Float]] = []
        var valueSums: [[Float]] = []
        var tokens = -1
        for entry in entries {
            // Read under the sequence's queue: no other request changes it meanwhile.
            let read: Result<([[Float]], [[Float]], Int), KVDError> = entry.sync { state in
                let seq = state.sequence
                guard !seq.isReleased else { return .failure(.notFound("rank_layers: sequence \(seq.id.raw) has been released")) }
                guard seq.layout == layout else {
                    return .failure(.invalidArgument("rank_layers: sequence \(seq.id.raw) is model '\(seq.layout.name)', the first is '\(layout.name)'"))
                }
                guard seq.aliases.allSatisfy({ $0 == nil }) else {
                    return .failure(.failedPrecondition("rank_layers: sequence \(seq.id.raw) already aliases layers; rank on unshared caches"))
                }
                let counts = Set(seq.heads.map(\.count))
                if counts.count > 1, let w = seq.layout.layerWindows.filter({ $0 > 0 }).min(), seq.length > w {
                    return .failure(.failedPrecondition(
                        "rank_layers: sequence \(seq.id.raw) (\(seq.length) tokens) is longer than model '\(layout.name)'s smallest "
                            + "sliding window (\(w) tokens), so its sliding layers hold fewer tokens than its full ones; rank on sequences of at most \(w) tokens"))
                }
                guard counts.count == 1, let n = counts.first, n > 0 else {
                    return .failure(.failedPrecondition(
                        "rank_layers: sequence \(seq.id.raw) must hold the same number of tokens (> 0) in every head; rank before compacting"))
                }
                let view = SequenceView(layout: seq.layout, heads: seq.heads, memory: store.arena.pageMemory, aliases: seq.aliases)
                let perLayer = { (values: Bool) in
                    (0..<layout.layers).map { l in
                        (0..<layout.kvHeads).flatMap { h in values ? view.values(l * layout.kvHeads + h) : view.keys(l * layout.kvHeads + h) }
                    }
                }
                return .success((perLayer(false), perLayer(true), n))
            }
            let (k, v, n) = try read.get()
            if tokens < 0 {
                tokens = n
                keySums = k
                valueSums = v
            } else {
                guard n == tokens else {
                    throw .invalidArgument("rank_layers: sequences hold \(tokens) and \(n) tokens; a calibration set needs equal lengths")
                }
                for l in 0..<layout.layers {
                    for i in keySums[l].indices {
                        keySums[l][i] += k[l][i]
                        valueSums[l][i] += v[l][i]
                    }
                }
            }
        }
        let scale = 1 / Float(entries.count)
        let keys = keySums.map { $0.map { $0 * scale } }
        let values = valueSums.map { $0.map { $0 * scale } }
        var out = Kvd_V1_RankLayersResponse()
        // Only layers with the same attention window may share a cache (KVSequence.resolveAliases).
        let ranked = LayerDistance.rank(keys: keys, values: values, heads: layout.kvHeads, tokens: tokens, dim: layout.headDim)
        out.pairs = ranked.filter { layout.window(layer: $0.layer) == layout.window(layer: $0.other) }.map { p in
            var pair = Kvd_V1_LayerPair()
            pair.layer = UInt32(p.layer)
            pair.other = UInt32(p.other)
            pair.distance = p.distance
            return pair
        }
        return out
    }
}
