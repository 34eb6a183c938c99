import KVDCore
import KVDPluginAPI

/// One compaction as the daemon runs it: plan, check the plan, pack kept tokens and free pages, then
/// apply layer aliases. The Compact handler and `kvd-bench` both call this, so the benchmark times
/// exactly what a request pays for (minus the wire).
public enum CompactionRunner {
    public static func run(
        _ method: any CompactionMethod, _ context: CompactionContext, sequence seq: KVSequence,
        allocator: PageAllocator, memory: PageMemory
    ) throws(KVDError) -> (planned: MethodPlan, outcome: KVSequence.CompactionOutcome) {
        let name = method.descriptor.name
        let planned = try method.plan(context)
        try PlanChecker.check(planned, counts: context.view.headCounts, layout: seq.layout, method: name)
        // Check the aliases before anything moves, so a bad map leaves the sequence untouched.
        if !planned.aliases.isEmpty { _ = try seq.resolveAliases(planned.aliases) }
        var outcome = try seq.compact(plan: planned.plan, method: name, allocator: allocator, memory: memory)
        if !planned.aliases.isEmpty {
            let freed = try seq.applyAliases(planned.aliases, allocator: allocator)
            outcome = KVSequence.CompactionOutcome(before: outcome.before, kept: seq.heads.map(\.count), pagesFreed: outcome.pagesFreed + freed)
        }
        return (planned, outcome)
    }
}
