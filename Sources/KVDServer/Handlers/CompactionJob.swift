import Dispatch
import KVDCore
import KVDPluginAPI
import KVDPluginHost

/// One compaction of one sequence with a chosen method: builds the method's view and context, runs
/// it through `CompactionRunner` and times it. The Compact handler and the memory manager both run
/// compactions through here.
enum CompactionJob {
    struct Result {
        let planned: MethodPlan
        let outcome: KVSequence.CompactionOutcome
        let elapsedNs: UInt64
    }

    static func run(
        _ choice: Choice, _ state: SequenceState, _ store: TenantStore, observation: Observation?,
        requestParams: Set<String> = [], floor: Int = 0, accept: ((MethodPlan) throws(KVDError) -> Void)? = nil,
        journaled: Bool = true
    ) throws(KVDError) -> Result {
        let seq = state.sequence
        let book = store.policies
        let start = DispatchTime.now().uptimeNanoseconds
        let view = SequenceView(layout: seq.layout, heads: seq.heads, memory: store.arena.pageMemory, aliases: seq.aliases, hidingSlidingLayers: true)
        let context = CompactionContext(
            view: view, observation: observation, params: choice.params, method: choice.method.descriptor.name,
            baseDirectory: book.baseDirectory, files: book.files(requestParams: requestParams))
        // With a journal, the new state is recorded before any old page is released or overwritten.
        // `journaled` false: a sequence about to be released (its release is already on record).
        let record: ((KVSequence) -> Void)? = !journaled ? nil : store.space.journal.map { journal in
            { seq in journal.put(seq, pinned: state.lease.pinned.load(ordering: .relaxed)) }
        }
        let metrics = store.shared.metrics?.compactions
        // Connection 0 is the memory manager's own (pressure compression, shrinking before an offload).
        let origin = store.connectionNumber == 0 ? "manager" : "request"
        let (planned, outcome): (MethodPlan, KVSequence.CompactionOutcome)
        do throws(KVDError) {
            (planned, outcome) = try CompactionRunner.run(
                choice.method, context, sequence: seq, allocator: store.pages, memory: store.arena.pageMemory, floor: floor,
                accept: accept, record: record)
        } catch {
            metrics?.failed(method: context.method, origin: origin)
            throw error
        }
        let elapsed = DispatchTime.now().uptimeNanoseconds - start
        metrics?.succeeded(method: context.method, origin: origin, outcome: outcome, pageBytes: store.arena.sizing.pageBytes, elapsedNs: elapsed)
        let name = choice.method.descriptor.name
        state.lastMethod = choice.policy.isEmpty ? name : "\(choice.policy) (\(name))"
        store.shared.logger?.info("compacted \(seq.id) with \(name)", [
            "tenant": store.space.name, "sequence": seq.id.raw, "method": name, "policy": choice.policy, "origin": origin,
            "tokens_before": outcome.before.reduce(0, +), "tokens_after": outcome.kept.reduce(0, +),
            "pages_freed": outcome.pagesFreed - outcome.pagesAllocated, "ms": Double(elapsed) / 1e6,
        ])
        return Result(planned: planned, outcome: outcome, elapsedNs: elapsed)
    }
}
