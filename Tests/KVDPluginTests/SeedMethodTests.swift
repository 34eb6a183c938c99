import Foundation
import KVDCore
import KVDPluginAPI
import KVSharer
import Testing

@testable import BalanceKV
@testable import DBudgetKV

/// Properties of the seed methods; their exact outputs are checked against NumPy ports end to end.
@Suite struct SeedMethodTests {
    @Test func balancedWalkHalvesDeterministicallyWithWeights() {
        var data = SplitMix64(seed: 5)
        let m = 37, d = 8
        let keys = (0..<(m * d)).map { _ in data.nextSignedUnit() }
        let values = (0..<(m * d)).map { _ in data.nextSignedUnit() }
        let ones = [Float](repeating: 1, count: m)
        for uniform in [false, true] {
            let walk = BalancedWalk(block: 8, rounds: 2, gamma: 4, tau: 1, beta: 0, uniform: uniform)
            var a = SplitMix64(seed: 9), b = SplitMix64(seed: 9), c = SplitMix64(seed: 10)
            let first = walk.run(keys: keys, values: values, weights: ones, dim: d, rng: &a)
            let again = walk.run(keys: keys, values: values, weights: ones, dim: d, rng: &b)
            let other = walk.run(keys: keys, values: values, weights: ones, dim: d, rng: &c)
            #expect(first.kept == again.kept && first.weights == again.weights)
            #expect(first.kept.count == (37 / 2) / 2)  // ⌊⌊37/2⌋/2⌋
            #expect(Set(first.kept).count == first.kept.count && first.kept.allSatisfy { (0..<m).contains($0) })
            #expect(first.weights.allSatisfy { [1, 2, 4].contains($0) })
            if uniform {
                // Random signs depend on the seed. (The balanced walk often does not: with γ = 4 its
                // probabilities saturate at 0 or 1 and the walk is deterministic.)
                #expect(first.kept != other.kept || first.weights != other.weights)
            }
        }
    }

    @Test func dbudgetCutShrinksAsThresholdGrows() throws {
        let (view, obs) = randomInputs(count: 60, window: 4, seed: 21)
        var previous = Int.max
        for t in [0.01, 0.05, 0.2, 0.5] {
            let p = try DBudgetKV.method.descriptor.resolve([("threshold", .float(t))])
            let plan = try DBudgetKV.method.plan(CompactionContext(view: view, observation: obs, params: p, method: "dbudgetkv", baseDirectory: ""))
            let budgets = try #require(plan.budgets)
            // One cut per layer: equal budgets within a layer (equal head counts here).
            for l in 0..<testLayout.layers { #expect(budgets[2 * l] == budgets[2 * l + 1]) }
            let total = budgets.reduce(0, +)
            #expect(total <= previous, "budgets grew from \(previous) to \(total) when T rose to \(t)")
            previous = total
        }
    }

    @Test func dbudgetPruneOrderAgreesWithTopKOnNaN() {
        // NaN scores (an inf or NaN in keys or queries makes them) must rank as the host's top-k
        // ranks them, lowest: dropping the first i of the pruning order then leaves exactly the
        // candidates top-k keeps with budget (candidates − i). Compared raw, NaN made the sort's
        // order arbitrary, so the stop measured the loss of other tokens than the ones dropped.
        let nan = Float.nan
        let cases: [[Float]] = [
            [0.3, nan, 0.1, 0.7, nan, 0.1, 0.5, -0.2, nan, 0.9],
            [nan, nan, nan, nan],
            [nan, 1, nan, 0, 1, nan, -Float.infinity, 2],
        ]
        for scores in cases {
            let prefix = scores.count
            for sinks in [0, 2] {
                let order = DBudgetStopper.pruneOrder(scores, sinks: sinks, prefix: prefix)
                #expect(Set(order) == Set(min(sinks, prefix)..<prefix))
                for i in 0...order.count {
                    let kept = topK(scores: scores, budget: order.count - i, sinks: sinks, window: 0, count: prefix)
                    let want = (0..<min(sinks, prefix)).map { $0 } + order[i...].sorted()
                    #expect(kept.map(Int.init) == want.sorted(), "scores \(scores) sinks \(sinks) drop \(i)")
                }
            }
        }
    }

    @Test func layerDistanceMatchesTheFormula() {
        // Two layers, one head, two tokens, dim 2: K0 = [[0,0],[0,0]], K1 = [[3,4],[0,0]]; V equal.
        let ranked = LayerDistance.rank(keys: [[0, 0, 0, 0], [3, 4, 0, 0], [0, 0, 6, 8]], values: [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], heads: 1, tokens: 2, dim: 2)
        // D(1,0) = ½·((5 + 0)/2 + 0) = 1.25; D(2,0) = ½·(10/2) = 2.5; D(2,1) = ½·((5 + 10)/2) = 3.75
        #expect(ranked.map(\.layer) == [2, 2, 1] && ranked.map(\.other) == [1, 0, 0])
        #expect(ranked.map(\.distance) == [3.75, 2.5, 1.25])
    }

    @Test func aliasMapsParse() throws {
        #expect(try KVSharer.parse("5:3, 7:2") == [5: 3, 7: 2])
        for bad in ["5", "5:x", "-1:0", "5:3,5:2"] {
            #expect(throws: KVDError.self) { try KVSharer.parse(bad) }
        }
    }
}
