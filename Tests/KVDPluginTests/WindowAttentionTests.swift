import Foundation
import KVDAttention
import KVDCore
import KVDPluginAPI
import Testing

/// Window attention (BLAS + softmax) against a naive double-precision loop written from the formula.
@Suite struct WindowAttentionTests {
    func naive(_ view: SequenceView, _ obs: Observation, h: Int, window w: Int) -> [Double] {
        let m = view.layout
        let n = view.headCounts[h], d = m.headDim, g = m.qHeads / m.kvHeads
        let keys = view.keys(h)
        let layer = h / m.kvHeads
        var scores = [Double](repeating: 0, count: n - w)
        for q in 0..<g {
            let base = obs.offset(layer: layer, qHead: (h % m.kvHeads) * g + q)
            for i in 0..<w {
                let visible = n - w + i + 1
                var logits = [Double](repeating: 0, count: visible)
                for j in 0..<visible {
                    var dot = 0.0
                    for k in 0..<d { dot += Double(obs.queries[base + i * d + k]) * Double(keys[j * d + k]) }
                    logits[j] = dot / Double(d).squareRoot()
                }
                let top = logits.max()!
                let e = logits.map { Foundation.exp($0 - top) }
                let sum = e.reduce(0, +)
                for t in 0..<(n - w) { scores[t] += e[t] / sum / Double(g * w) }
            }
        }
        return scores
    }

    @Test func matchesTheFormula() throws {
        let (view, obs) = randomInputs(count: 37, window: 5, seed: 11)
        let p = ResolvedParams(values: [:])
        let got = try WindowAttention.scores(CompactionContext(view: view, observation: obs, params: p, method: "t", baseDirectory: ""), window: 5)
        for h in 0..<testLayout.headCount {
            let want = naive(view, obs, h: h, window: 5)
            #expect(got[h].count == want.count)
            for (a, b) in zip(got[h], want) { #expect(abs(Double(a) - b) < 1e-5 * max(1, abs(b))) }
        }
    }
}
