import Foundation
import KVDCore
import KVDProtocol

/// Query: per (layer, head) counts, positions (or position runs), log-weights, and K/V as page ids,
/// inline bytes or a contiguous copy in the staging area. The reply is written straight in wire form
/// (`WireWriter`): one pass, K/V bytes copied once from the pages into the reply, no per-head message
/// objects; METADATA skips even the per-head reply structs (`QueryMetadata`).
enum QueryHandler {
    /// PAGES and METADATA replies describe pages; they copy no K/V bytes.
    static func copiesNoKV(_ r: Kvd_V1_QueryRequest) -> Bool { [.unspecified, .pages, .metadata].contains(r.mode) }

    /// Room left in front of the reply for the response envelope (header and the body's tag).
    static let headroom = 128

    /// The serialized kvd.v1.QueryResponse, after `headroom` free bytes.
    static func handle(_ r: Kvd_V1_QueryRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> WireWriter {
        let seq = entry.sequence
        let m = seq.layout
        let layers = try selectedLayers(r.layers, m)
        let mode: Kvd_V1_QueryMode = r.mode == .unspecified ? .pages : r.mode
        guard [.pages, .inline, .gather, .metadata].contains(mode) else {
            throw .invalidArgument("query: unknown mode \(r.mode.rawValue); use PAGES, INLINE, GATHER or METADATA")
        }
        if mode == .metadata {
            let w = WireWriter(capacity: Self.headroom + 64 + QueryMetadata.size(seq, layers: layers, runs: r.positionRuns),
                               headroom: Self.headroom)
            writeHeader(w, seq)
            QueryMetadata.write(w, seq, layers: layers, runs: r.positionRuns)
            w.uint(7, UInt64(m.pageTokens))
            return w
        }
        // An aliased layer answers with its owner's heads (KVSharer): same pages, positions, weights.
        let asked = layers.flatMap { l in (0..<m.kvHeads).map { (layer: l, head: $0, index: m.headIndex(layer: seq.owner(of: l), head: $0)) } }
        var gatherAt = 0
        if mode == .gather {
            let needed = asked.reduce(0) { $0 + 2 * seq.heads[$1.index].count * m.tokenBytes }
            gatherAt = try entry.stagingBuffer(bytes: needed, store.staging).lowerBound
        }
        let g = store.arena.geometry
        let heads = asked.map { want in
            let cache = seq.heads[want.index]
            // GATHER: every head's K then V, one after another in the sequence's staging buffer.
            defer { gatherAt += 2 * cache.count * m.tokenBytes }
            return HeadReply(
                layer: want.layer, head: want.head, owner: want.index / m.kvHeads, cache: cache, mode: mode,
                pageRefs: r.pageRefs, positionRuns: r.positionRuns, layout: m, geometry: g, gatherAt: gatherAt, stagingOffset: store.arena.sizing.stagingOffset)
        }
        let total = heads.reduce(64) { $0 + WireWriter.Size.bytes(6, count: $1.size) }
        let w = WireWriter(capacity: Self.headroom + total, headroom: Self.headroom)
        writeHeader(w, seq)
        for h in heads {
            w.lengthDelimited(6, length: h.size)
            h.write(w, memory: store.arena.pageMemory, staging: store.arena.staging)
        }
        w.uint(7, UInt64(m.pageTokens))
        return w
    }

    /// Fields 1–5 of the QueryResponse (64 bytes are budgeted for them and field 7).
    private static func writeHeader(_ w: WireWriter, _ seq: KVSequence) {
        w.uint(1, seq.id.raw)
        w.uint(2, seq.generation)
        w.uint(3, UInt64(seq.length))
        w.uint(4, UInt64(Kvd_V1_DType(seq.layout.dtype).rawValue))
        w.uint(5, UInt64(seq.layout.headDim))
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
}

/// One kvd.v1.HeadView of a Query reply: its size first (the length prefix), then its fields.
private struct HeadReply {
    let layer: Int, head: Int, owner: Int
    let cache: HeadCache
    let mode: Kvd_V1_QueryMode
    let pageRefs: Bool
    /// Positions as runs (field 14) instead of one int32 per token (field 4).
    let positionRuns: Bool
    let layout: ModelLayout
    let geometry: PageGeometry
    /// GATHER: where this head's K goes inside the staging area, and the staging area's offset in
    /// the segment (the reply's offsets are from the segment start).
    let gatherAt: Int, stagingOffset: Int
    let runs: [TokenRun]
    let size: Int

    init(layer: Int, head: Int, owner: Int, cache: HeadCache, mode: Kvd_V1_QueryMode, pageRefs: Bool, positionRuns: Bool,
         layout m: ModelLayout, geometry: PageGeometry, gatherAt: Int, stagingOffset: Int) {
        (self.layer, self.head, self.owner, self.cache, self.mode, self.pageRefs) = (layer, head, owner, cache, mode, pageRefs)
        self.positionRuns = positionRuns
        (layout, self.geometry, self.gatherAt, self.stagingOffset) = (m, geometry, gatherAt, stagingOffset)
        runs = HeadCache.runs(pages: cache.pages, start: 0, count: cache.count, pageTokens: m.pageTokens)
        typealias S = WireWriter.Size
        let n = cache.count
        // The fields METADATA has too (counts, positions, log-weights, alias), sized alike.
        var size = QueryMetadata.headSize(cache, layer, head, owner, positionRuns)
        switch mode {
        case .pages:
            if pageRefs {
                for run in runs { size += S.bytes(6, count: Self.pageRefSize(run, m, geometry)) }
            }
            size += S.bytes(11, count: 4 * runs.count)
        case .inline:
            size += 2 * S.bytes(7, count: n * m.tokenBytes)
        case .gather:
            let (k, v) = Self.gatherOffsets(gatherAt, stagingOffset, n * m.tokenBytes)
            size += S.uint(9, k) + S.uint(10, v)
        default:
            break
        }
        self.size = size
    }

    private static func gatherOffsets(_ at: Int, _ stagingOffset: Int, _ bytes: Int) -> (UInt64, UInt64) {
        (UInt64(stagingOffset + at), UInt64(stagingOffset + at + bytes))
    }

    private static func pageRefSize(_ run: TokenRun, _ m: ModelLayout, _ g: PageGeometry) -> Int {
        RunLocation(run, g, m).fields.reduce(0) { $0 + WireWriter.Size.uint($1.0, $1.1) }
    }

    func write(_ w: WireWriter, memory mem: PageMemory, staging: UnsafeMutableRawPointer) {
        let m = layout
        let n = cache.count
        w.uint(1, UInt64(layer))
        w.uint(2, UInt64(head))
        w.uint(3, UInt64(n))
        if !positionRuns { w.bytes(4, count: 4 * n) { cache.writePositions(to: $0) } }
        QueryMetadata.writeLogWeights(w, cache)
        switch mode {
        case .pages:
            if pageRefs {
                for run in runs {
                    w.lengthDelimited(6, length: Self.pageRefSize(run, m, geometry))
                    for (field, value) in RunLocation(run, geometry, m).fields { w.uint(field, value) }
                }
            }
            w.bytes(11, count: 4 * runs.count) { dest in
                for (i, run) in runs.enumerated() { dest.storeBytes(of: run.page.raw.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            }
        case .inline:
            w.bytes(7, count: n * m.tokenBytes) { gather(mem.key, into: $0) }
            w.bytes(8, count: n * m.tokenBytes) { gather(mem.value, into: $0) }
        case .gather:
            let bytes = n * m.tokenBytes
            gather(mem.key, into: staging + gatherAt)
            gather(mem.value, into: staging + gatherAt + bytes)
            let (k, v) = Self.gatherOffsets(gatherAt, stagingOffset, bytes)
            w.uint(9, k)
            w.uint(10, v)
        default:
            break
        }
        w.uint(12, layer != owner ? 1 : 0)
        w.uint(13, UInt64(owner))
        if positionRuns && n > 0 { QueryMetadata.writeRuns(w, cache) }
    }

    /// Copies this head's K (or V) runs, in token order, to `dest`.
    private func gather(_ locate: (PageID, Int, ModelLayout) -> UnsafeMutableRawPointer, into dest: UnsafeMutableRawPointer) {
        var dest = dest
        for run in runs {
            let n = run.count * layout.tokenBytes
            dest.copyMemory(from: locate(run.page, run.slot, layout), byteCount: n)
            dest += n
        }
    }
}
