/// A head's tokens as the journal and the remote tier's blobs store them (its pages aside): token
/// count (u32), position runs (u32 count, then first and count as i32 pairs), a log-weight flag
/// (u8) and, when set, one f32 log-weight per token.
extension HeadCache {
    func encodeTokens(into w: inout ByteWriter) {
        w.count(count)
        w.count(positionRuns.count)
        for run in positionRuns {
            w.i32(run.first)
            w.i32(run.count)
        }
        if let weights = storedLogWeights {
            w.bool(true)
            for x in weights { w.f32(x) }
        } else {
            w.bool(false)
        }
    }

    /// Reads what `encodeTokens` wrote, for a head holding `pages`. Counts are checked against the
    /// bytes left before anything is allocated.
    static func decodeTokens(_ r: inout ByteReader, pages: [PageID]) throws(DurableFormatError) -> HeadCache {
        let count = Int(try r.u32("head tokens"))
        let runCount = try r.count("position runs", itemBytes: 8)
        var runs: [PositionRun] = []
        runs.reserveCapacity(runCount)
        for _ in 0..<runCount { runs.append(PositionRun(first: try r.i32("run first"), count: try r.i32("run count"))) }
        var weights: [Float]? = nil
        if try r.bool("has log-weights") {
            guard count <= r.remaining / 4 else { throw DurableFormatError("\(count) log-weights do not fit") }
            var w: [Float] = []
            w.reserveCapacity(count)
            for _ in 0..<count { w.append(try r.f32("log-weight")) }
            weights = w
        }
        return HeadCache(pages: pages, count: count, positionRuns: runs, logWeights: weights)
    }
}
