import KVDCore

/// Scores the tokens of every head before the window: higher means keep. The host turns scores and
/// budgets into kept sets; a scorer never chooses.
public protocol TokenScorer: Sendable {
    var name: String { get }
    var params: [ParamSpec] { get }
    var needsQueries: Bool { get }
    func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError)
    /// Per (layer, head), layer-major: `headCounts[h] - window` scores.
    func scores(_ context: CompactionContext, window: Int) throws(KVDError) -> [[Float]]
}

extension TokenScorer {
    public var needsQueries: Bool { false }
    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {}
}

/// Decides how many tokens each head keeps outside the window.
public protocol BudgetAllocator: Sendable {
    var name: String { get }
    var params: [ParamSpec] { get }
    /// True when `budgets` needs the scores (AdaKV spends a layer's budget where scores are high).
    var needsScores: Bool { get }
    func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError)
    /// Per (layer, head): budget outside the window. `prefix[h]` tokens are eligible.
    func budgets(_ context: CompactionContext, prefix: [Int], scores: [[Float]]?) throws(KVDError) -> [Int]
}

extension BudgetAllocator {
    public var needsScores: Bool { false }
    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {}
}

/// The parameters every budgeted method shares.
public enum BudgetParams {
    public static let specs: [ParamSpec] = [
        ParamSpec("budget", .int, default: .int(128), min: 0, max: 16_777_216, "average tokens kept per head outside the window"),
        ParamSpec("fraction", .float, default: .float(0), min: 0, max: 1, "if > 0: budget = fraction × tokens before the window, averaged over heads of layers that are not aliased (overrides budget)"),
        ParamSpec("window", .int, default: .int(0), min: 0, max: 16_777_216, "tokens at the end always kept when no observation queries are sent (with queries: their count)"),
    ]

    /// The average per-head budget B: `fraction` of the mean eligible prefix when set, else `budget`.
    /// The mean runs over the heads that hold a cache (`budgetedHeads`): an aliased layer's heads
    /// are empty, and counting them would shrink B by the aliased share (4 of 30 layers: −13%), so
    /// a fraction would keep less than that fraction of the tokens actually held.
    public static func average(_ context: CompactionContext, prefix: [Int]) -> Int {
        let fraction = context.params.float("fraction")
        let heads = budgetedHeads(context)
        if fraction > 0, !heads.isEmpty {
            let mean = Double(heads.reduce(0) { $0 + prefix[$1] }) / Double(heads.count)
            // fraction is checked to be in [0, 1] and mean is at most a head's count; converted checked all the same.
            return Int(exactly: (fraction * mean).rounded()) ?? 0
        }
        return context.params.int("budget")
    }

    /// The heads (layer-major) a budget is spread over: those of layers that hold their own cache.
    /// An aliased layer (KVSharer) reads its owner's tokens and can keep none, so a budget given to
    /// it would be lost and Σ b_h would overstate what is kept. Allocators hand out B per head of
    /// these (Σ b_h = B · their count) and give aliased heads 0.
    /// Sliding-window layers are left out the same way: compaction keeps what their window holds.
    public static func budgetedHeads(_ context: CompactionContext) -> [Int] {
        (0..<context.layout.headCount).filter { context.view.isBudgeted(head: $0) }
    }

    /// The layers holding their own cache, in depth order (what `budgetedHeads` keeps, by layer).
    public static func budgetedLayers(_ context: CompactionContext) -> [Int] {
        (0..<context.layout.layers).filter { !context.view.isAliased(layer: $0) && !context.view.isSliding(layer: $0) }
    }
}

/// Every head gets the same budget.
public struct UniformAllocator: BudgetAllocator {
    public init() {}
    public let name = "uniform"
    public var params: [ParamSpec] { BudgetParams.specs }
    public func budgets(_ context: CompactionContext, prefix: [Int], scores: [[Float]]?) throws(KVDError) -> [Int] {
        let b = BudgetParams.average(context, prefix: prefix)
        return prefix.indices.map { context.view.isBudgeted(head: $0) ? b : 0 }
    }
}

/// Sets how far pruning may go: per (layer, head), the fewest tokens outside the window that must
/// stay, given the ranking the scorer produced. Combined with an allocator, each head keeps
/// max(budget, floor): prune in the scorer's order until the budget or the stop, whichever comes first.
public protocol PruneStopper: Sendable {
    var name: String { get }
    var params: [ParamSpec] { get }
    var needsQueries: Bool { get }
    func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError)
    func floors(_ context: CompactionContext, window: Int, scores: [[Float]]) throws(KVDError) -> [Int]
    /// Tokens at the start of every head the stop keeps outside its floors (DBudgetKV's `sinks`):
    /// the selector keeps them on top of each head's budget, and floors count the rest of the prefix.
    func sinks(_ params: ResolvedParams) -> Int
}

extension PruneStopper {
    public func sinks(_ params: ResolvedParams) -> Int { 0 }
}

/// No budget of its own (0 per head): with a stopper, the stop alone decides how much stays.
public struct NoBudgetAllocator: BudgetAllocator {
    public init() {}
    public let name = "none"
    public var params: [ParamSpec] { [BudgetParams.specs[2]] }  // window only
    public func budgets(_ context: CompactionContext, prefix: [Int], scores: [[Float]]?) throws(KVDError) -> [Int] {
        prefix.map { _ in 0 }
    }
}
