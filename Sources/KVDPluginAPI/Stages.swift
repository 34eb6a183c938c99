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
        ParamSpec("fraction", .float, default: .float(0), min: 0, max: 1, "if > 0: budget = fraction × tokens before the window (overrides budget)"),
        ParamSpec("window", .int, default: .int(0), min: 0, max: 16_777_216, "tokens at the end always kept when no observation queries are sent (with queries: their count)"),
    ]

    /// The average per-head budget: `fraction` of the mean eligible prefix when set, else `budget`.
    public static func average(_ params: ResolvedParams, prefix: [Int]) -> Int {
        let fraction = params.float("fraction")
        if fraction > 0, !prefix.isEmpty {
            let mean = Double(prefix.reduce(0, +)) / Double(prefix.count)
            // fraction is checked to be in [0, 1] and mean is at most a head's count; converted checked all the same.
            return Int(exactly: (fraction * mean).rounded()) ?? 0
        }
        return params.int("budget")
    }
}

/// Every head gets the same budget.
public struct UniformAllocator: BudgetAllocator {
    public init() {}
    public let name = "uniform"
    public var params: [ParamSpec] { BudgetParams.specs }
    public func budgets(_ context: CompactionContext, prefix: [Int], scores: [[Float]]?) throws(KVDError) -> [Int] {
        let b = BudgetParams.average(context.params, prefix: prefix)
        return prefix.map { _ in b }
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
