import KVDCore

/// A method made of stages: a scorer, a budget allocator and a selector (top-k by default).
/// SnapKV, H2O, knorm, PyramidKV, AdaKV and HeadKV are presets of this; a policy in the config can
/// combine stages freely (e.g. the PyramidKV allocator with the knorm scorer).
public struct ComposedMethod: CompactionMethod {
    public let descriptor: MethodDescriptor
    public let scorer: any TokenScorer
    public let allocator: any BudgetAllocator
    public let selector: any TokenSelector
    /// Optional dynamic stop on top of the scorer's ranking (DBudgetKV).
    public let stopper: (any PruneStopper)?

    /// `defaults` replaces stage defaults by name (e.g. headkv pools with max, kernel 7).
    public init(
        name: String, description: String, scorer: any TokenScorer,
        allocator: any BudgetAllocator = UniformAllocator(), selector: any TokenSelector = TopKSelector(),
        stopper: (any PruneStopper)? = nil, defaults: [String: ParamValue] = [:]
    ) {
        var seen = Set<String>()
        var params: [ParamSpec] = []
        for p in allocator.params + scorer.params + selector.params + (stopper?.params ?? []) where seen.insert(p.name).inserted {
            params.append(defaults[p.name].map(p.withDefault) ?? p)
        }
        descriptor = MethodDescriptor(name: name, description: description, params: params)
        self.scorer = scorer
        self.allocator = allocator
        self.selector = selector
        self.stopper = stopper
    }

    /// The same method with a stopper added (a policy `method: headkv, stopper: dbudgetkv`).
    public func with(stopper: any PruneStopper) -> ComposedMethod {
        ComposedMethod(
            name: "\(descriptor.name)+\(stopper.name)", description: "\(descriptor.description); stopped by \(stopper.name)",
            scorer: scorer, allocator: allocator, selector: selector, stopper: stopper,
            defaults: Dictionary(uniqueKeysWithValues: descriptor.params.map { ($0.name, $0.defaultValue) }))
    }

    public var needsQueries: Bool { scorer.needsQueries || (stopper?.needsQueries ?? false) }

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        try scorer.check(params, context)
        try allocator.check(params, context)
        try stopper?.check(params, context)
    }

    public func plan(_ context: CompactionContext) throws(KVDError) -> MethodPlan {
        let window = try context.window()
        let scores = try scorer.scores(context, window: window)
        let prefix = context.view.headCounts.map { max(0, $0 - window) }
        var budgets = try allocator.budgets(context, prefix: prefix, scores: allocator.needsScores ? scores : nil)
        guard budgets.count == prefix.count, budgets.allSatisfy({ $0 >= 0 }) else {
            throw .internalError("allocator '\(allocator.name)' of '\(descriptor.name)' returned \(budgets.count) budgets (need \(prefix.count), none negative)")
        }
        var sinks = 0
        if let stopper {
            let floors = try stopper.floors(context, window: window, scores: scores)
            budgets = zip(budgets, floors).map { max($0, $1) }
            sinks = stopper.sinks(context.params)
        }
        return try selector.select(context, scores: scores, budgets: budgets, window: window, sinks: sinks)
    }
}
