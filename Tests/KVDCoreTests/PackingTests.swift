import KVDCore
import Testing

/// Packing is checked against the naive definition: after applying the moves token by token, slot i
/// must hold what slot kept[i] held before.
@Suite struct PackingTests {
    private func applyNaively(_ moves: [PackMove], to tokens: inout [Int]) {
        for m in moves { for k in 0..<m.count { tokens[m.destination + k] = tokens[m.source + k] } }
    }

    @Test(arguments: [1, 3, 4, 16])
    func movesRealiseThePlan(pageTokens: Int) {
        var rng = SplitMix64(seed: UInt64(pageTokens))
        for n in [0, 1, 5, 17, 64] {
            for _ in 0..<20 {
                let kept = (0..<n).filter { _ in rng.next() % 3 != 0 }.map(Int32.init)
                var tokens = Array(0..<n)
                let moves = CompactionPlan.packMoves(kept: kept, pageTokens: pageTokens)
                applyNaively(moves, to: &tokens)
                #expect(Array(tokens.prefix(kept.count)) == kept.map(Int.init))
                for m in moves {
                    // Each move stays inside one source page and one destination page.
                    #expect(m.source / pageTokens == (m.source + m.count - 1) / pageTokens)
                    #expect(m.destination / pageTokens == (m.destination + m.count - 1) / pageTokens)
                    #expect(m.destination < m.source)
                }
            }
        }
    }

    @Test func tokensAlreadyInPlaceAreNotMoved() {
        #expect(CompactionPlan.packMoves(kept: [0, 1, 2, 3], pageTokens: 2).isEmpty)
        #expect(CompactionPlan.packMoves(kept: [0, 1, 5, 6, 7], pageTokens: 4) == [
            PackMove(source: 5, destination: 2, count: 2),  // dst page 0 ends at 4
            PackMove(source: 7, destination: 4, count: 1),
        ])
    }
}
