import Foundation
import KVDCore
import KVDPluginAPI

typealias SplitMix = SplitMix64

extension SplitMix64 {
    /// Uniform in [-1, 1).
    mutating func float() -> Float { nextSignedUnit() }
}

/// A GQA model: 3 layers, 2 KV heads, 4 query heads, head dim 8.
let testLayout = ModelLayout(name: "t", layers: 3, kvHeads: 2, qHeads: 4, headDim: 8, dtype: .f32, pageTokens: 4, defaultMethod: "snapkv")

/// Random keys/values per head (`count` tokens each) and `window` random queries per query head.
/// Heads of layers `aliases` marks as aliased are empty, as KVSharer leaves them.
func randomInputs(
    count: Int, window: Int, seed: UInt64, layout m: ModelLayout = testLayout, aliases: [Int?]? = nil
) -> (SequenceView, Observation) {
    var rng = SplitMix(seed: seed)
    let held = { (h: Int) in aliases?[h / m.kvHeads] == nil ? count : 0 }
    let keys = (0..<m.headCount).map { h in (0..<(held(h) * m.headDim)).map { _ in rng.float() } }
    let values = (0..<m.headCount).map { h in (0..<(held(h) * m.headDim)).map { _ in rng.float() } }
    let queries = (0..<(m.layers * m.qHeads * window * m.headDim)).map { _ in rng.float() * 2 }
    return (
        SequenceView(layout: m, keys: keys, values: values, aliases: aliases),
        Observation(layers: m.layers, qHeads: m.qHeads, window: window, headDim: m.headDim, queries: queries)
    )
}

/// A head-score file for `testLayout` in the reference format, written to a temporary path.
func writeHeadScores(_ importance: [[Double]], perQueryHead: Bool = false) throws -> String {
    var table: [String: [Double]] = [:]
    for (l, row) in importance.enumerated() {
        for (h, v) in row.enumerated() { table["\(l)-\(h)"] = [v * 0.5, v * 1.5] }  // mean = v
    }
    let path = NSTemporaryDirectory() + "kvd-headscores-\(UUID().uuidString).json"
    try JSONSerialization.data(withJSONObject: table).write(to: URL(fileURLWithPath: path))
    return path
}
