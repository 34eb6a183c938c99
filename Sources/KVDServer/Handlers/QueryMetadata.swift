import KVDCore
import KVDProtocol

/// The heads of a METADATA Query reply (kvd.v1.HeadView without K/V), written straight from the
/// sequence's heads: one pass to size them, one to write them, no per-head values or arrays. A
/// metadata Query is answered on the socket thread, so its per-head cost is the daemon's; building
/// a reply struct per head (copies of the head's arrays and the layout, retained and released)
/// was a third of the daemon's CPU time for a 90-head model (docs/PROTOCOL.md, Querying).
enum QueryMetadata {
    typealias S = WireWriter.Size

    /// Bytes of every field-6 (`heads`) entry, tags and lengths included.
    static func size(_ seq: KVSequence, layers: [Int], runs: Bool) -> Int {
        let m = seq.layout
        return seq.heads.withUnsafeBufferPointer { heads in
            var total = 0
            for l in layers {
                let owner = seq.owner(of: l)
                for h in 0..<m.kvHeads {
                    total += S.bytes(6, count: headSize(heads[m.headIndex(layer: owner, head: h)], l, h, owner, runs))
                }
            }
            return total
        }
    }

    /// Writes every requested (layer, head) as field 6, layer-major: an aliased layer (KVSharer)
    /// answers with its owner's heads, marked `aliased`.
    static func write(_ w: WireWriter, _ seq: KVSequence, layers: [Int], runs: Bool) {
        let m = seq.layout
        seq.heads.withUnsafeBufferPointer { heads in
            for l in layers {
                let owner = seq.owner(of: l)
                for h in 0..<m.kvHeads {
                    let cache = heads[m.headIndex(layer: owner, head: h)]
                    w.lengthDelimited(6, length: headSize(cache, l, h, owner, runs))
                    writeHead(w, cache, l, h, owner, runs)
                }
            }
        }
    }

    static func headSize(_ c: HeadCache, _ layer: Int, _ head: Int, _ owner: Int, _ runs: Bool) -> Int {
        let n = c.count
        return S.uint(1, UInt64(layer)) + S.uint(2, UInt64(head)) + S.uint(3, UInt64(n))
            + (runs ? 0 : S.bytes(4, count: 4 * n)) + S.bytes(5, count: c.hasLogWeights ? 4 * n : 0)
            + S.uint(12, layer != owner ? 1 : 0) + S.uint(13, UInt64(owner))
            + (runs ? S.bytes(14, count: n == 0 ? 0 : 8 * c.positionRuns.count) : 0)
    }

    static func writeHead(_ w: WireWriter, _ c: HeadCache, _ layer: Int, _ head: Int, _ owner: Int, _ runs: Bool) {
        let n = c.count
        w.uint(1, UInt64(layer))
        w.uint(2, UInt64(head))
        w.uint(3, UInt64(n))
        if !runs { w.bytes(4, count: 4 * n) { c.writePositions(to: $0) } }
        writeLogWeights(w, c)
        w.uint(12, layer != owner ? 1 : 0)
        w.uint(13, UInt64(owner))
        if runs && n > 0 { writeRuns(w, c) }
    }

    /// Field 5: the head's log-weights, float32 little-endian; omitted while all are 0.
    static func writeLogWeights(_ w: WireWriter, _ c: HeadCache) {
        guard let weights = c.storedLogWeights else { return }
        w.bytes(5, count: 4 * weights.count) { dest in
            for (i, x) in weights.enumerated() { dest.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        }
    }

    /// Field 14 (`position_runs`): (first int32, count uint32) little-endian per run. The head keeps
    /// its runs merged (no run continues the previous one), so this is the fewest runs.
    static func writeRuns(_ w: WireWriter, _ c: HeadCache) {
        let runs = c.positionRuns
        w.bytes(14, count: 8 * runs.count) { dest in
            for (i, r) in runs.enumerated() {
                dest.storeBytes(of: r.first.littleEndian, toByteOffset: 8 * i, as: Int32.self)
                dest.storeBytes(of: UInt32(r.count).littleEndian, toByteOffset: 8 * i + 4, as: UInt32.self)
            }
        }
    }
}
