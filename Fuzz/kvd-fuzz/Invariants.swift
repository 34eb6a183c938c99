import KVDProtocol

/// Checks of successful replies beyond "no crash": a reply the protocol documents but the daemon
/// does not honour is a bug the fuzzer should stop on too.
enum Invariants {
    /// A budgeted compaction keeps, per head, at least min(budget, tokens before): the budget is
    /// how many tokens outside the sinks and window it keeps (all of them when fewer). Heads of
    /// layers aliased by the same request (KVSharer) hold nothing afterwards and are skipped.
    static func compaction(_ c: Kvd_V1_CompactResponse) {
        guard !c.budgets.isEmpty, !KnownCrashes.enabled else { return }
        guard c.budgets.count == c.heads.count else {
            fatalError("compact (\(c.method)): \(c.budgets.count) budgets for \(c.heads.count) heads")
        }
        let aliased = Set(c.aliases.map(\.layer))
        for (head, budget) in zip(c.heads, c.budgets) where !aliased.contains(head.layer) {
            if head.kept < min(budget, head.before) {
                fatalError(
                    "compact (\(c.method)) kept \(head.kept) of \(head.before) tokens of layer \(head.layer) head \(head.head), "
                        + "below its budget \(budget)")
            }
        }
    }
}
