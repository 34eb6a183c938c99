import KVDCore
import KVDPluginAPI

/// The host's checks of a method's plan, beyond index validity (which the sequence checks): the
/// sinks and the window are kept, and no head keeps more than its budget. A plan that fails is
/// refused with INTERNAL naming the method, before any page is touched.
public enum PlanChecker {
    public static func check(_ p: MethodPlan, counts: [Int], layout: ModelLayout, method: String) throws(KVDError) {
        try p.plan.validate(headCounts: counts, layout: layout, method: method)
        if let budgets = p.budgets, budgets.count != counts.count {
            throw .internalError("method '\(method)' returned an invalid plan: \(budgets.count) budgets for \(counts.count) heads")
        }
        for (h, kept) in p.plan.kept.enumerated() {
            let n = counts[h]
            let window = min(p.window, n)
            let sinks = min(p.sinks, n - window)
            let where_ = "layer \(h / layout.kvHeads) head \(h % layout.kvHeads)"
            // kept is sorted and unique (validated above), so the window is its last `window` entries.
            let tail = kept.suffix(window)
            guard tail.count == window, tail.first.map({ Int($0) == n - window }) ?? true else {
                throw .internalError("method '\(method)' returned an invalid plan: \(where_) drops a token of the \(window)-token window")
            }
            guard kept.count >= sinks + window, sinks == 0 || Int(kept[sinks - 1]) == sinks - 1 else {
                throw .internalError("method '\(method)' returned an invalid plan: \(where_) drops one of the \(sinks) sink tokens")
            }
            if let budgets = p.budgets, kept.count > budgets[h] + window + sinks {
                throw .internalError(
                    "method '\(method)' returned an invalid plan: \(where_) keeps \(kept.count) tokens, budget \(budgets[h]) + window \(window) + sinks \(sinks)")
            }
        }
    }
}
