import KVDCore

/// The host's top-k for one head of `count` tokens: the first `sinks`, the `budget` highest-scoring
/// tokens between the sinks and the window (ties: lower position first), and the last `window`,
/// as sorted indices. `scores` covers positions `0 ..< count - window`.
public func topK(scores: [Float], budget: Int, sinks: Int = 0, window: Int, count: Int) -> [Int32] {
    let prefixEnd = count - window
    precondition(scores.count == prefixEnd, "scores must cover the \(prefixEnd) tokens before the window")
    let sinkEnd = min(sinks, prefixEnd)
    var chosen = Array(sinkEnd..<prefixEnd)
    if budget < chosen.count {
        chosen.sort { a, b in scores[a] != scores[b] ? scores[a] > scores[b] : a < b }
        chosen = Array(chosen.prefix(max(budget, 0))).sorted()
    }
    return (0..<sinkEnd).map(Int32.init) + chosen.map(Int32.init) + (prefixEnd..<count).map(Int32.init)
}

/// Turns scores and budgets into a plan: top-k per head plus sinks and window.
public protocol TokenSelector: Sendable {
    var name: String { get }
    var params: [ParamSpec] { get }
    func select(_ context: CompactionContext, scores: [[Float]], budgets: [Int], window: Int) throws(KVDError) -> MethodPlan
}

/// Default selector: top-budget by score, plus the window, per head.
public struct TopKSelector: TokenSelector {
    public init() {}
    public let name = "topk"
    public let params: [ParamSpec] = []
    public func select(_ context: CompactionContext, scores: [[Float]], budgets: [Int], window: Int) throws(KVDError) -> MethodPlan {
        let counts = context.view.headCounts
        let kept = counts.indices.map { h in topK(scores: scores[h], budget: budgets[h], window: window, count: counts[h]) }
        return MethodPlan(plan: CompactionPlan(kept: kept), window: window, budgets: budgets)
    }
}
