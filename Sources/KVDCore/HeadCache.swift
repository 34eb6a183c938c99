/// What one (layer, KV head) of a sequence holds: its pages, how many tokens, and per token the
/// original position and log-weight. Token t lives in `pages[t / P]` at slot `t % P`; compaction
/// keeps that true by packing kept tokens to the front.
///
/// Positions are stored as runs of consecutive positions and log-weights only once a method sets
/// one: appends extend the last run and compactions keep long runs, so a head's bookkeeping costs
/// a few runs instead of 8 bytes per token (which was 1.7–3.5% of the K/V bytes it describes).
public struct HeadCache: Sendable, Equatable {
    /// Consecutive original positions first, first + 1, ..., first + count - 1.
    public struct PositionRun: Sendable, Equatable {
        public var first: Int32
        public var count: Int32
        public init(first: Int32, count: Int32) {
            self.first = first
            self.count = count
        }
    }

    public var pages: [PageID] = []
    public var count: Int = 0
    /// Always merged: no run continues the previous one, so equal heads compare equal.
    public private(set) var positionRuns: [PositionRun] = []
    /// nil while every log-weight is 0 (every method but BalanceKV).
    public private(set) var storedLogWeights: [Float]? = nil

    public init() {}

    /// A head rebuilt from its stored parts (a restart reading the journal);
    /// `SequenceImage.validate` checks that they agree.
    public init(pages: [PageID], count: Int, positionRuns: [PositionRun], logWeights: [Float]?) {
        self.pages = pages
        self.count = count
        self.positionRuns = positionRuns
        self.storedLogWeights = logWeights
    }

    /// Pages needed to hold `tokens` tokens with `pageTokens` per page.
    @inline(__always) public static func pagesNeeded(_ tokens: Int, pageTokens: Int) -> Int {
        (tokens + pageTokens - 1) / pageTokens
    }

    /// Original position of every token, in order.
    public var positions: [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(count)
        // Offsets from the run's first position: a run may end at Int32.max, where
        // `first + count` (one past its last position) is not an Int32.
        for r in positionRuns { out.append(contentsOf: (0..<r.count).lazy.map { r.first &+ $0 }) }
        return out
    }

    /// Positions of the tokens at `indices` (sorted ascending, each below `count`), read off the
    /// runs: O(runs + indices), whatever the head's length.
    public func positions(at indices: [Int32]) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(indices.count)
        var run = 0
        var runStart = 0  // token index of positionRuns[run]'s first token
        for i in indices {
            let t = Int(i)
            while t - runStart >= Int(positionRuns[run].count) {
                runStart += Int(positionRuns[run].count)
                run += 1
            }
            out.append(positionRuns[run].first &+ Int32(t - runStart))
        }
        return out
    }

    /// Writes every token's position as int32 little-endian to `dest` (`count` × 4 bytes).
    public func writePositions(to dest: UnsafeMutableRawPointer) {
        var at = 0
        for r in positionRuns {
            for i in 0..<r.count {
                dest.storeBytes(of: (r.first &+ i).littleEndian, toByteOffset: at, as: Int32.self)
                at += 4
            }
        }
    }

    /// Log-weight of every token (zeros unless a method set some).
    public var logWeights: [Float] { storedLogWeights ?? [Float](repeating: 0, count: count) }

    /// Whether any token has a log-weight other than 0.
    public var hasLogWeights: Bool { storedLogWeights != nil }

    /// Records `tokens` new tokens at positions first..<first + tokens, with log-weight 0. Every
    /// position must be an Int32 (`KVSequence` refuses growth past `KVSequence.maxLength` first).
    public mutating func extend(first: Int32, tokens: Int) {
        guard tokens >= 0, let n = Int32(exactly: tokens), n == 0 || !first.addingReportingOverflow(n - 1).overflow else {
            preconditionFailure("positions \(first) + \(tokens) tokens do not fit int32")
        }
        count += tokens
        Self.appendRun(&positionRuns, first: first, count: n)
        storedLogWeights?.append(contentsOf: repeatElement(0, count: tokens))
    }

    /// Forgets the first `n` tokens' positions and log-weights and lowers `count` by `n` (a sliding
    /// window dropping its leading pages; the caller drops the pages). O(runs).
    public mutating func dropFirstTokens(_ n: Int) {
        precondition(n >= 0 && n <= count, "dropping \(n) of \(count) tokens")
        var left = n
        var cut = 0
        while left > 0 {
            let c = Int(positionRuns[cut].count)
            if c <= left {
                left -= c
                cut += 1
            } else {
                positionRuns[cut].first &+= Int32(left)
                positionRuns[cut].count -= Int32(left)
                left = 0
            }
        }
        positionRuns.removeFirst(cut)
        count -= n
        if storedLogWeights != nil { storedLogWeights!.removeFirst(n) }
    }

    /// Replaces positions (one per token; `count` must already be set) and log-weights (nil or all
    /// zero drops them).
    public mutating func set(positions: [Int32], logWeights: [Float]?) {
        var runs: [PositionRun] = []
        for p in positions { Self.appendRun(&runs, first: p, count: 1) }
        positionRuns = runs
        storedLogWeights = logWeights.flatMap { w in w.contains { $0 != 0 } ? w : nil }
    }

    private static func appendRun(_ runs: inout [PositionRun], first: Int32, count: Int32) {
        guard count > 0 else { return }
        // A run whose count would overflow Int32 is continued by a new run instead.
        if let last = runs.last, last.first &+ last.count == first, !last.count.addingReportingOverflow(count).overflow {
            runs[runs.count - 1].count += count
        } else {
            runs.append(PositionRun(first: first, count: count))
        }
    }
}
