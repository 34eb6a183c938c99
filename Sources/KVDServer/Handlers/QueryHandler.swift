import Foundation
import KVDCore
import KVDProtocol

/// Query: per (layer, head) counts, positions, log-weights, and K/V as page references, inline bytes
/// or a contiguous copy in the staging area.
enum QueryHandler {
    static func handle(_ r: Kvd_V1_QueryRequest, _ entry: SequenceEntry, _ store: Store) throws(KVDError) -> Kvd_V1_QueryResponse {
        let seq = entry.sequence
        let m = seq.layout
        let layers = try selectedLayers(r.layers, m)
        let mode: Kvd_V1_QueryMode = r.mode == .unspecified ? .pages : r.mode
        guard [.pages, .inline, .gather, .metadata].contains(mode) else {
            throw .invalidArgument("query: unknown mode \(r.mode.rawValue); use PAGES, INLINE, GATHER or METADATA")
        }
        // An aliased layer answers with its owner's heads (KVSharer): same pages, positions, weights.
        let headIndices = layers.flatMap { l in (0..<m.kvHeads).map { m.headIndex(layer: seq.owner(of: l), head: $0) } }
        let asked = layers.flatMap { l in (0..<m.kvHeads).map { (layer: l, head: $0) } }
        let mem = store.arena.pageMemory
        let g = store.arena.geometry

        var gatherCursor = 0
        var gatherBase = 0
        if mode == .gather {
            let needed = headIndices.reduce(0) { $0 + 2 * seq.heads[$1].count * m.tokenBytes }
            gatherBase = try entry.stagingBuffer(bytes: needed, store.staging).lowerBound
        }

        var out = Kvd_V1_QueryResponse()
        out.sequenceID = seq.id.raw
        out.generation = seq.generation
        out.length = UInt64(seq.length)
        out.dtype = Kvd_V1_DType(m.dtype)
        out.headDim = UInt32(m.headDim)
        out.pageTokens = UInt32(m.pageTokens)
        out.heads.reserveCapacity(headIndices.count)
        for (h, want) in zip(headIndices, asked) {
            let head = seq.heads[h]
            var v = Kvd_V1_HeadView()
            v.layer = UInt32(want.layer)
            v.head = UInt32(want.head)
            v.ownerLayer = UInt32(h / m.kvHeads)
            v.aliased = h / m.kvHeads != want.layer
            v.numTokens = UInt32(head.count)
            v.positions = littleEndianBytes(head.positions)
            v.logWeights = littleEndianBytes(head.logWeights)
            let runs = HeadCache.runs(pages: head.pages, start: 0, count: head.count, pageTokens: m.pageTokens)
            switch mode {
            case .pages:
                v.pages = encodeRuns(runs, g, m)
                v.pageIds = littleEndianBytes(runs.map(\.page.raw))
            case .inline:
                v.keys = copy(runs, m, mem.key)
                v.values = copy(runs, m, mem.value)
            case .gather:
                let bytes = head.count * m.tokenBytes
                let keyAt = gatherBase + gatherCursor
                let valueAt = keyAt + bytes
                gather(runs, m, mem.key, into: store.arena.staging + keyAt)
                gather(runs, m, mem.value, into: store.arena.staging + valueAt)
                v.gatherKeyOffset = UInt64(store.arena.sizing.stagingOffset + keyAt)
                v.gatherValueOffset = UInt64(store.arena.sizing.stagingOffset + valueAt)
                gatherCursor += 2 * bytes
            default:
                break
            }
            out.heads.append(v)
        }
        return out
    }

    private static func selectedLayers(_ asked: [UInt32], _ m: ModelLayout) throws(KVDError) -> [Int] {
        if asked.isEmpty { return Array(0..<m.layers) }
        var seen = Set<UInt32>()
        for l in asked {
            guard Int(l) < m.layers else { throw .invalidArgument("query: layer \(l) out of range 0..<\(m.layers)") }
            guard seen.insert(l).inserted else { throw .invalidArgument("query: layer \(l) listed twice") }
        }
        return asked.map(Int.init)
    }

    private typealias Locate = (PageID, Int, ModelLayout) -> UnsafeMutableRawPointer

    private static func copy(_ runs: [TokenRun], _ m: ModelLayout, _ locate: Locate) -> Data {
        var data = Data(count: runs.reduce(0) { $0 + $1.count } * m.tokenBytes)
        data.withUnsafeMutableBytes { gather(runs, m, locate, into: $0.baseAddress) }
        return data
    }

    private static func gather(_ runs: [TokenRun], _ m: ModelLayout, _ locate: Locate, into dest: UnsafeMutableRawPointer?) {
        guard var dest else { return }
        for run in runs {
            let n = run.count * m.tokenBytes
            dest.copyMemory(from: locate(run.page, run.slot, m), byteCount: n)
            dest += n
        }
    }
}
