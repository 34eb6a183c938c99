/// A run of consecutive tokens that sits inside one page: `count` tokens starting at slot `slot`.
public struct TokenRun: Sendable, Equatable {
    public let page: PageID
    public let slot: Int
    public let count: Int
    public init(page: PageID, slot: Int, count: Int) {
        self.page = page
        self.slot = slot
        self.count = count
    }
}

extension HeadCache {
    /// Splits tokens `start ..< start + count` of a page list into per-page runs, in token order.
    public static func runs(pages: [PageID], start: Int, count: Int, pageTokens: Int) -> [TokenRun] {
        var runs: [TokenRun] = []
        var t = start
        let end = start + count
        while t < end {
            let slot = t % pageTokens
            let n = min(pageTokens - slot, end - t)
            runs.append(TokenRun(page: pages[t / pageTokens], slot: slot, count: n))
            t += n
        }
        return runs
    }
}
