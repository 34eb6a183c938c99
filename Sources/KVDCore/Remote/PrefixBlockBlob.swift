/// One cached prompt block as the remote tier shares it between daemons (docs/REMOTE.md): its
/// chained hash, its parent's, and the K/V of its `page_tokens` tokens in every (layer, head), so a
/// daemon that misses a prefix locally can take it from Redis instead of recomputing it.
///
/// Bytes: magic `KVDBLKB1` (8), format version (u32), reserved (u32), checksum (u64: xxHash64 of
/// everything after it), the block's hash (lo, hi), its parent's hash (lo, hi),
/// then a `SequenceBlob` of the block (length = (block + 1) × P, every head P tokens at positions
/// block × P ..< (block + 1) × P, no log-weights) — which names the model and carries its own checks.
public struct PrefixBlockBlob: Sendable, Equatable {
    public static let magic = Array("KVDBLKB1".utf8)
    public static let version: UInt32 = 1

    public let hash: PrefixHash
    public let parent: PrefixHash
    /// 0 for a prompt's first block.
    public let block: Int
    public let content: SequenceBlob

    /// The block held in `pages` (one full page per head, layer-major), read out of `memory`.
    public init(hash: PrefixHash, parent: PrefixHash, block: Int, pages: [PageID], layout: ModelLayout, memory: PageMemory) {
        let p = layout.pageTokens
        let bytes = p * layout.tokenBytes
        let keys = pages.map { page in [UInt8](UnsafeRawBufferPointer(start: memory.key(page, slot: 0, layout), count: bytes)) }
        let values = pages.map { page in [UInt8](UnsafeRawBufferPointer(start: memory.value(page, slot: 0, layout), count: bytes)) }
        let run = HeadCache.PositionRun(first: Int32(clamping: block * p), count: Int32(p))
        let image = SequenceImage(
            id: 0, model: layout.name, length: (block + 1) * p, aliases: Array(repeating: nil, count: layout.layers),
            heads: pages.map { _ in HeadCache(pages: [], count: p, positionRuns: [run], logWeights: nil) })
        self.init(hash: hash, parent: parent, block: block, content: SequenceBlob(layout: layout, image: image, keys: keys, values: values))
    }

    public init(hash: PrefixHash, parent: PrefixHash, block: Int, content: SequenceBlob) {
        self.hash = hash
        self.parent = parent
        self.block = block
        self.content = content
    }

    public func encoded() -> [UInt8] {
        var body = ByteWriter()
        for h in [hash, parent] {
            body.u64(h.lo)
            body.u64(h.hi)
        }
        body.raw(content.encoded())
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u32(Self.version)
        w.u32(0)
        w.u64(XXHash64.hash(body.bytes))
        w.raw(body.bytes)
        return w.bytes
    }

    /// Reads a block and checks it is exactly the one asked for: `hash` under `parent` (the chain a
    /// prompt's hashes give), a whole page of tokens per head of `layout` at block `block`'s
    /// positions. Never traps on any input.
    public static func decode(
        _ bytes: [UInt8], hash: PrefixHash, parent: PrefixHash, block: Int, layout: ModelLayout
    ) throws(DurableFormatError) -> PrefixBlockBlob {
        var r = ByteReader(bytes)
        guard try r.raw(8, "block magic") == magic else { throw DurableFormatError("not a kvd prefix block (bad magic)") }
        let v = try r.u32("block version")
        guard v == version else { throw DurableFormatError("prefix block format version \(v); this kvd reads version \(version)") }
        guard try r.u32("block reserved") == 0 else { throw DurableFormatError("prefix block reserved field is not zero") }
        let sum = try r.u64("block checksum")
        let body = Array(bytes[r.offset...])
        guard XXHash64.hash(body) == sum else { throw DurableFormatError("prefix block checksum mismatch (corrupted)") }
        var b = ByteReader(body)
        let gotHash = PrefixHash(lo: try b.u64("hash"), hi: try b.u64("hash"))
        let gotParent = PrefixHash(lo: try b.u64("parent"), hi: try b.u64("parent"))
        guard gotHash == hash, gotParent == parent else {
            throw DurableFormatError("prefix block holds \(gotHash) under \(gotParent), not the \(hash) under \(parent) asked for")
        }
        let content = try SequenceBlob.decode(Array(body[b.offset...]), expected: layout)
        let p = layout.pageTokens
        let run = HeadCache.PositionRun(first: Int32(clamping: block * p), count: Int32(clamping: p))
        guard content.image.length == (block + 1) * p,
              content.image.heads.allSatisfy({ $0.count == p && $0.positionRuns == [run] && !$0.hasLogWeights }),
              content.image.aliases.allSatisfy({ $0 == nil }) else {
            throw DurableFormatError("prefix block \(hash) is not one full page per head at block \(block)")
        }
        return PrefixBlockBlob(hash: hash, parent: parent, block: block, content: content)
    }

    /// Writes the block into `pages` (one fresh page per head, layer-major).
    public func write(into pages: [PageID], memory: PageMemory) {
        let layout = content.layout
        precondition(pages.count == layout.headCount)
        for (h, page) in pages.enumerated() {
            content.withHead(h) { k, v in
                memory.key(page, slot: 0, layout).copyMemory(from: k.baseAddress!, byteCount: k.count)
                memory.value(page, slot: 0, layout).copyMemory(from: v.baseAddress!, byteCount: v.count)
            }
        }
    }
}
