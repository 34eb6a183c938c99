import Foundation
import KVDCore
import KVDPluginAPI
import KVDProtocol

/// Compact: the method plans, the sequence validates and packs, freed pages go back to the arena.
enum CompactHandler {
    static func handle(_ r: Kvd_V1_CompactRequest, _ entry: SequenceEntry, _ store: Store) throws(KVDError) -> Kvd_V1_CompactResponse {
        let seq = entry.sequence
        let name = r.method.isEmpty ? seq.layout.defaultMethod : r.method
        let method = try store.methods.method(named: name)
        let params = try method.descriptor.resolve(try overrides(r.params))
        try method.check(params)
        let start = DispatchTime.now().uptimeNanoseconds
        let view = SequenceView(layout: seq.layout, headCounts: seq.heads.map(\.count), positions: seq.heads.map(\.positions))
        let plan = try method.plan(view, params)
        let outcome = try seq.compact(plan: plan, method: name, allocator: store.pages, memory: store.arena.pageMemory)
        let elapsed = DispatchTime.now().uptimeNanoseconds - start

        var out = Kvd_V1_CompactResponse()
        out.sequenceID = seq.id.raw
        out.generation = seq.generation
        out.method = name
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
