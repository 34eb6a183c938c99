import KVDCore
import Testing

/// Positions stored as runs and log-weights stored only when set: what a head reports must be the
/// same per-token arrays as before, for any mix of appends and compactions.
@Suite struct HeadCacheTests {
    @Test func appendsExtendOneRunAndPositionsRoundTrip() {
        var h = HeadCache()
        h.extend(first: 0, tokens: 5)
        h.extend(first: 5, tokens: 3)
        #expect(h.positionRuns == [HeadCache.PositionRun(first: 0, count: 8)])
        #expect(h.positions == Array(0..<8))
        #expect(h.count == 8)
        #expect(!h.hasLogWeights && h.logWeights == Array(repeating: 0, count: 8))
    }

    @Test(arguments: [
        [Int32](), [0], [0, 1, 2, 7, 8, 20], [3, 5, 7], [100, 101, 102, 103],
    ])
    func setPositionsMergesRunsAndWritesLittleEndian(_ positions: [Int32]) {
        var h = HeadCache()
        h.count = positions.count
        h.set(positions: positions, logWeights: nil)
        #expect(h.positions == positions)
        // Independent count of runs: a run starts wherever a position does not follow the previous.
        let starts = positions.indices.filter { $0 == 0 || positions[$0] != positions[$0 - 1] + 1 }.count
        #expect(h.positionRuns.count == starts)
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(1, 4 * positions.count), alignment: 4)
        defer { bytes.deallocate() }
        h.writePositions(to: bytes)
        let read = (0..<positions.count).map { Int32(littleEndian: bytes.load(fromByteOffset: 4 * $0, as: Int32.self)) }
        #expect(read == positions)
    }

    @Test func logWeightsAreKeptOnlyWhenOneIsNotZero() {
        var h = HeadCache()
        h.count = 3
        h.set(positions: [0, 1, 2], logWeights: [0, 0, 0])
        #expect(!h.hasLogWeights)
        h.set(positions: [0, 1, 2], logWeights: [0, 0.5, 0])
        #expect(h.hasLogWeights && h.logWeights == [0, 0.5, 0])
        // Appended tokens start at log-weight 0 next to the stored ones.
        h.extend(first: 3, tokens: 2)
        #expect(h.logWeights == [0, 0.5, 0, 0, 0])
        #expect(h.positions == [0, 1, 2, 3, 4])
    }

    @Test func equalContentsCompareEqualWhateverTheHistory() {
        var a = HeadCache(), b = HeadCache()
        a.extend(first: 0, tokens: 4)
        b.count = 4
        b.set(positions: [0, 1, 2, 3], logWeights: [0, 0, 0, 0])
        #expect(a == b)
    }
}
