/// What a compaction method decided: for every (layer, head), layer-major, the indices of the tokens
/// to keep (sorted, unique, within the head's count) and optionally their new log-weights.
/// Methods only decide; `Sequence.compact` validates the plan and moves the bytes.
public struct CompactionPlan: Sendable, Equatable {
    public var kept: [[Int32]]
    /// nil keeps each kept token's current log-weight; otherwise one array per head, one weight per kept token.
    public var logWeights: [[Float]]?

    public init(kept: [[Int32]], logWeights: [[Float]]? = nil) {
        self.kept = kept
        self.logWeights = logWeights
    }

    /// Checks the plan against the head counts it will be applied to. `method` names the culprit.
    public func validate(headCounts: [Int], layout: ModelLayout, method: String) throws(KVDError) {
        func bad(_ why: String) -> KVDError {
            .internalError("method '\(method)' returned an invalid plan: \(why)")
        }
        guard kept.count == headCounts.count else {
            throw bad("\(kept.count) heads, the sequence has \(headCounts.count)")
        }
        if let logWeights, logWeights.count != kept.count {
            throw bad("log-weights for \(logWeights.count) heads, expected \(kept.count)")
        }
        for (h, indices) in kept.enumerated() {
            let (layer, head) = (h / layout.kvHeads, h % layout.kvHeads)
            var previous: Int32 = -1
            for i in indices {
                guard i > previous else {
                    throw bad("layer \(layer) head \(head): indices not strictly ascending at \(i)")
                }
                guard i < headCounts[h] else {
                    throw bad("layer \(layer) head \(head): index \(i) out of range 0..<\(headCounts[h])")
                }
                previous = i
            }
            if let logWeights, logWeights[h].count != indices.count {
                throw bad("layer \(layer) head \(head): \(logWeights[h].count) log-weights for \(indices.count) tokens")
            }
        }
    }
}

/// One memmove of packing: `count` tokens from token index `source` to `destination`, both runs
/// inside a single page.
public struct PackMove: Sendable, Equatable {
    public let source: Int
    public let destination: Int
    public let count: Int
    public init(source: Int, destination: Int, count: Int) {
        self.source = source
        self.destination = destination
        self.count = count
    }
}

extension CompactionPlan {
    /// The moves that pack `kept` (sorted, unique) to the front of a head's pages. Runs of consecutive
    /// kept tokens move together, split where either side crosses a page. Tokens already in place are
    /// skipped. Applying the moves in order is safe: destination i never exceeds source kept[i], and a
    /// later source is always past every earlier destination.
    public static func packMoves(kept: [Int32], pageTokens: Int) -> [PackMove] {
        runs(kept: kept, pageTokens: pageTokens, skipInPlace: true)
    }

    /// Every run of `kept` with its packed destination, including runs already in place: what a
    /// copy of the kept tokens into fresh pages moves (a head with shared pages, see `KVSequence.compact`).
    public static func copyMoves(kept: [Int32], pageTokens: Int) -> [PackMove] {
        runs(kept: kept, pageTokens: pageTokens, skipInPlace: false)
    }

    private static func runs(kept: [Int32], pageTokens: Int, skipInPlace: Bool) -> [PackMove] {
        var moves: [PackMove] = []
        var i = 0
        while i < kept.count {
            let source = Int(kept[i])
            var n = 1
            while i + n < kept.count, Int(kept[i + n]) == source + n,
                (source + n) % pageTokens != 0, (i + n) % pageTokens != 0
            {
                n += 1
            }
            if source != i || !skipInPlace { moves.append(PackMove(source: source, destination: i, count: n)) }
            i += n
        }
        return moves
    }
}
