import KVDCore
import KVDPluginAPI

/// One compaction as the daemon runs it: plan, check the plan, pack kept tokens and free pages, then
/// apply layer aliases. The Compact handler and `kvd-bench` both call this, so the benchmark times
/// exactly what a request pays for (minus the wire).
public enum CompactionRunner {
    public static func run(
        _ method: any CompactionMethod, _ context: CompactionContext, sequence seq: KVSequence,
        allocator: PageAllocator, memory: PageMemory, floor: Int = 0,
        accept: ((MethodPlan) throws(KVDError) -> Void)? = nil,
        record: ((KVSequence) -> Void)? = nil
    ) throws(KVDError) -> (planned: MethodPlan, outcome: KVSequence.CompactionOutcome) {
        let name = method.descriptor.name
        var planned = try method.plan(context)
        try PlanChecker.check(planned, counts: context.view.headCounts, layout: seq.layout, method: name)
        // Sliding layers were shown empty and planned as such: they keep what they hold.
        if context.view.hidesSlidingLayers { keepSlidingLayers(&planned, seq) }
        if floor > 0 { try checkFloor(planned, counts: context.view.headCounts, seq: seq, floor: floor, method: name) }
        // Check the aliases before anything moves, so a bad map leaves the sequence untouched.
        if !planned.aliases.isEmpty { _ = try seq.resolveAliases(planned.aliases) }
        // The caller's last word on a checked plan (the memory manager refuses one that frees nothing).
        try accept?(planned)
        guard let record else {
            var outcome = try seq.compact(plan: planned.plan, method: name, allocator: allocator, memory: memory, threads: ComputeThreads.count)
            if !planned.aliases.isEmpty {
                let freed = try seq.applyAliases(planned.aliases, allocator: allocator)
                outcome = KVSequence.CompactionOutcome(
                    before: outcome.before, kept: seq.heads.map(\.count), pagesFreed: outcome.pagesFreed + freed,
                    pagesAllocated: outcome.pagesAllocated)
            }
            return (planned, outcome)
        }
        // Crash safety: the old pages stay untouched and held until the new state is recorded, so
        // a crash at any point leaves either the old state or the new one whole.
        let outcome = try seq.compact(
            plan: planned.plan, method: name, allocator: allocator, memory: memory, holdReleased: true, threads: ComputeThreads.count)
        var held = outcome.held
        if !planned.aliases.isEmpty { held += try seq.applyAliasesHolding(planned.aliases) }
        record(seq)
        let freed = allocator.release(held)
        return (planned, KVSequence.CompactionOutcome(
            before: outcome.before, kept: seq.heads.map(\.count), pagesFreed: freed, pagesAllocated: outcome.pagesAllocated))
    }

    /// Makes every head of a sliding-window layer keep all its tokens (and log-weights) in `planned`,
    /// and drops budgets for them: compaction leaves a window's tokens as they are, and
    /// CompactResponse reports kept = before for those heads.
    static func keepSlidingLayers(_ planned: inout MethodPlan, _ seq: KVSequence) {
        let layout = seq.layout
        for h in seq.heads.indices where layout.window(layer: h / layout.kvHeads) > 0 && h < planned.plan.kept.count {
            let n = seq.heads[h].count
            planned.plan.kept[h] = Array(0..<Int32(n))
            if planned.plan.logWeights != nil { planned.plan.logWeights![h] = seq.heads[h].logWeights }
            if planned.budgets != nil { planned.budgets![h] = 0 }
        }
    }

    /// The memory manager's floor: no head may be left with fewer than `floor` tokens (or than it
    /// had, when it had fewer), and no layer may be aliased away. Checked before anything moves.
    static func checkFloor(_ planned: MethodPlan, counts: [Int], seq: KVSequence, floor: Int, method: String) throws(KVDError) {
        if !planned.aliases.isEmpty {
            throw .failedPrecondition("\(method): the plan aliases layers, which would leave them below memory.floor_tokens (\(floor))")
        }
        for (h, kept) in planned.plan.kept.enumerated() where h < counts.count && kept.count < min(counts[h], floor) {
            let m = seq.layout
            throw .failedPrecondition(
                "\(method): the plan keeps \(kept.count) of \(counts[h]) tokens in layer \(h / m.kvHeads) head \(h % m.kvHeads), below memory.floor_tokens (\(floor))")
        }
    }
}
