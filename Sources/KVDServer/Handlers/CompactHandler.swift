import Foundation
import KVDCore
import KVDPluginAPI
import KVDPluginHost
import KVDProtocol

/// Compact: choose the method (request, policy, rule or model default), let it plan, check the plan,
/// then pack kept tokens and free emptied pages. A failing method leaves the sequence untouched.
enum CompactHandler {
    static func handle(_ r: Kvd_V1_CompactRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_CompactResponse {
        let seq = entry.sequence
        let book = store.policies
        let choice = try book.choose(
            method: r.method, policy: r.policy, overrides: try overrides(r.params),
            state: RuleState(model: seq.layout, length: seq.length, arenaUsed: store.arenaUsed))
        let name = choice.method.descriptor.name
        let observation = try ObservationParser.parse(r, entry, store)
        // Kept for the memory manager: a query-based pressure policy can then use them later.
        if let o = observation { entry.keepObservation(o, in: store.space, budget: store.memory.keepQueriesBytes) }
        let job = try CompactionJob.run(choice, entry, store, observation: observation, requestParams: Set(r.params.map(\.name)))
        let (planned, outcome, elapsed) = (job.planned, job.outcome, job.elapsedNs)

        var out = Kvd_V1_CompactResponse()
        out.sequenceID = seq.id.raw
        out.generation = seq.generation
        out.method = name
        out.policy = choice.policy
        out.chosenBy = choice.chosenBy
        out.budgets = planned.reportBudgets ? planned.budgets?.map { UInt32(clamping: $0) } ?? [] : []
        let m = seq.layout
        out.heads = outcome.before.indices.map { h in
            var c = Kvd_V1_HeadCount()
            c.layer = UInt32(h / m.kvHeads)
            c.head = UInt32(h % m.kvHeads)
            c.before = UInt32(outcome.before[h])
            c.kept = UInt32(outcome.kept[h])
            return c
        }
        out.pagesFreed = UInt32(outcome.pagesFreed)
        out.bytesFreed = UInt64(outcome.pagesFreed * store.arena.sizing.pageBytes)
        out.elapsedNs = elapsed
        out.aliases = seq.aliases.enumerated().compactMap { layer, owner in
            owner.map { o in
                var a = Kvd_V1_LayerAlias()
                a.layer = UInt32(layer)
                a.owner = UInt32(o)
                return a
            }
        }
        return out
    }

    private static func overrides(_ params: [Kvd_V1_Param]) throws(KVDError) -> [(name: String, value: ParamValue)] {
        var out: [(name: String, value: ParamValue)] = []
        for p in params {
            guard !out.contains(where: { $0.name == p.name }) else { throw .invalidArgument("compact: parameter '\(p.name)' given twice") }
            switch p.value {
            case .intValue(let v)?: out.append((p.name, .int(v)))
            case .floatValue(let v)?: out.append((p.name, .float(v)))
            case .stringValue(let v)?: out.append((p.name, .string(v)))
            case .boolValue(let v)?: out.append((p.name, .bool(v)))
            case nil: throw .invalidArgument("compact: parameter '\(p.name)' has no value")
            }
        }
        return out
    }
}
