/// What one (layer, KV head) of a sequence holds: its pages, how many tokens, and per token the
/// original position and log-weight. Token t lives in `pages[t / P]` at slot `t % P`; compaction
/// keeps that true by packing kept tokens to the front.
public struct HeadCache: Sendable, Equatable {
    public var pages: [PageID] = []
    public var count: Int = 0
    public var positions: [Int32] = []
    /// Added to the token's attention logit by the runtime; 0 unless a method (BalanceKV) sets it.
    public var logWeights: [Float] = []

    public init() {}

    /// Pages needed to hold `tokens` tokens with `pageTokens` per page.
    @inline(__always) public static func pagesNeeded(_ tokens: Int, pageTokens: Int) -> Int {
        (tokens + pageTokens - 1) / pageTokens
    }
}
