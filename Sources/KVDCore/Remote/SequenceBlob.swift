/// A sequence as the remote tier stores it (docs/REMOTE.md): self-describing (the model's layout
/// travels with it), versioned and checksummed, so a daemon that reads it back — this one after an
/// eviction, or another one — can tell it is whole and meant for the model it serves before a byte
/// reaches a page.
///
/// Bytes: magic `KVDSEQB1` (8), format version (u32), reserved (u32), checksum (u64: SipHash-2-4 of
/// the payload under a fixed key; it finds corruption, it authenticates nothing), payload length
/// (u64), then the payload: the layout (model name, layers, KV heads, query heads, head dim, dtype,
/// page tokens), the sequence (id, generation, length, compaction mark, aliases) and per (layer,
/// head): token count, position runs, log-weights if any, then the K bytes and the V bytes of its
/// tokens in order (count × head_dim × dtype size each). All integers little-endian.
public struct SequenceBlob: Sendable, Equatable {
    public static let magic = Array("KVDSEQB1".utf8)
    public static let version: UInt32 = 1
    static let headerBytes = 32
    static let checksumKey = SipKey(k0: 0x6B76_645F_7365_7162, k1: 0x6C6F_625F_7375_6D31)

    public let layout: ModelLayout
    /// The bookkeeping, with no pages (pages are local to a segment).
    public let image: SequenceImage
    /// Per (layer, head): K bytes and V bytes of its tokens, in token order.
    public let keys: [[UInt8]]
    public let values: [[UInt8]]

    public init(layout: ModelLayout, image: SequenceImage, keys: [[UInt8]], values: [[UInt8]]) {
        self.layout = layout
        self.image = image
        self.keys = keys
        self.values = values
    }

    /// Bytes of K and V this blob carries.
    public var kvBytes: Int { keys.reduce(0) { $0 + $1.count } + values.reduce(0) { $0 + $1.count } }

    // MARK: encoding

    public func encoded() -> [UInt8] {
        var p = ByteWriter()
        p.string(layout.name)
        for n in [layout.layers, layout.kvHeads, layout.qHeads, layout.headDim, layout.pageTokens] { p.count(n) }
        p.string(layout.dtype.rawValue)
        p.u64(image.id)
        p.u64(image.generation)
        p.count(image.length)
        p.bool(image.everCompacted)
        p.count(image.aliases.count)
        for a in image.aliases { p.i32(a.map { Int32($0) } ?? -1) }
        p.count(image.heads.count)
        for (h, head) in image.heads.enumerated() {
            head.encodeTokens(into: &p)
            p.raw(keys[h])
            p.raw(values[h])
        }
        let payload = p.bytes
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u32(Self.version)
        w.u32(0)
        w.u64(SipHash.hash64(payload, key: Self.checksumKey))
        w.u64(UInt64(payload.count))
        w.raw(payload)
        return w.bytes
    }

    /// Reads a blob and checks it whole: magic, version, length, checksum, then that it was written
    /// for exactly `expected` (name and every dimension) and that every head's counts, positions,
    /// log-weights and byte counts agree. Never traps on any input.
    public static func decode(_ bytes: [UInt8], expected: ModelLayout) throws(DurableFormatError) -> SequenceBlob {
        try decode(bytes) { $0 == expected.name ? expected : nil }
    }

    /// `decode` for whichever of this daemon's models the blob names (`layouts` by name; nil for a
    /// model it does not serve).
    public static func decode(_ bytes: [UInt8], layouts: (String) -> ModelLayout?) throws(DurableFormatError) -> SequenceBlob {
        var r = ByteReader(bytes)
        guard try r.raw(8, "blob magic") == magic else { throw DurableFormatError("not a kvd sequence blob (bad magic)") }
        let v = try r.u32("blob version")
        guard v == version else { throw DurableFormatError("blob format version \(v); this kvd reads version \(version)") }
        guard try r.u32("blob reserved") == 0 else { throw DurableFormatError("blob reserved field is not zero (corrupted or a newer format)") }
        let sum = try r.u64("blob checksum")
        let length = try r.u64("blob length")
        guard length == UInt64(r.remaining) else {
            throw DurableFormatError("blob says \(length) payload bytes but has \(r.remaining) (cut or padded)")
        }
        let payload = Array(bytes[headerBytes...])
        guard SipHash.hash64(payload, key: checksumKey) == sum else { throw DurableFormatError("blob checksum mismatch (corrupted)") }
        var p = ByteReader(payload)
        let name = try p.string("model", max: 255)
        var dims: [Int] = []
        for what in ["layers", "kv heads", "query heads", "head dim", "page tokens"] { dims.append(Int(try p.u32(what))) }
        let dtype = try p.string("dtype", max: 8)
        guard let expected = layouts(name) else { throw DurableFormatError("blob was written for model '\(name)', which this daemon does not serve") }
        guard dims == [expected.layers, expected.kvHeads, expected.qHeads, expected.headDim, expected.pageTokens],
              dtype == expected.dtype.rawValue else {
            throw DurableFormatError(
                "blob was written for model '\(name)' (\(dims.map(String.init).joined(separator: "×")), \(dtype)); this daemon's '\(expected.name)' differs")
        }
        let id = try p.u64("sequence id")
        let generation = try p.u64("generation")
        let seqLength = Int(try p.u32("length"))
        let everCompacted = try p.bool("ever compacted")
        let layerCount = try p.count("layers", itemBytes: 4)
        guard layerCount == expected.layers else { throw DurableFormatError("blob has \(layerCount) alias entries for \(expected.layers) layers") }
        var aliases: [Int?] = []
        for _ in 0..<layerCount {
            let a = try p.i32("alias")
            guard a >= -1 else { throw DurableFormatError("alias \(a)") }
            aliases.append(a < 0 ? nil : Int(a))
        }
        let headCount = try p.count("heads", itemBytes: 9)
        guard headCount == expected.headCount else { throw DurableFormatError("blob has \(headCount) heads; the model has \(expected.headCount)") }
        var heads: [HeadCache] = []
        var keys: [[UInt8]] = []
        var values: [[UInt8]] = []
        for h in 0..<headCount {
            let head = try HeadCache.decodeTokens(&p, pages: [])
            // count ≤ 2^32 and tokenBytes ≤ a few KiB: no overflow in Int, and `raw` checks the bytes left.
            let bytes = head.count * expected.tokenBytes
            keys.append(try p.raw(bytes, "head \(h) keys"))
            values.append(try p.raw(bytes, "head \(h) values"))
            heads.append(head)
        }
        guard p.atEnd else { throw DurableFormatError("blob has \(p.remaining) bytes past its last head") }
        let image = SequenceImage(id: id, model: name, generation: generation, length: seqLength, everCompacted: everCompacted,
                                  pinned: false, aliases: aliases, heads: heads)
        try image.validateContents(expected)
        return SequenceBlob(layout: expected, image: image, keys: keys, values: values)
    }
}

extension SequenceBlob {
    /// A copy of `seq`'s K/V and bookkeeping, read out of its pages (call on the sequence's queue).
    public init(capturing seq: KVSequence, memory: PageMemory) {
        let layout = seq.layout
        var keys: [[UInt8]] = []
        var values: [[UInt8]] = []
        for head in seq.heads {
            var k = [UInt8](repeating: 0, count: head.count * layout.tokenBytes)
            var v = k
            var at = 0
            for run in HeadCache.runs(pages: head.pages, start: 0, count: head.count, pageTokens: layout.pageTokens) {
                let n = run.count * layout.tokenBytes
                k.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: at).copyMemory(from: memory.key(run.page, slot: run.slot, layout), byteCount: n) }
                v.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: at).copyMemory(from: memory.value(run.page, slot: run.slot, layout), byteCount: n) }
                at += n
            }
            keys.append(k)
            values.append(v)
        }
        var image = seq.image(pinned: false)
        for h in image.heads.indices { image.heads[h].pages = [] }
        self.init(layout: layout, image: image, keys: keys, values: values)
    }

    /// A new sequence `id` holding this blob's tokens in fresh pages (all taken at once, or none:
    /// RESOURCE_EXHAUSTED changes nothing).
    public func restore(id: SequenceID, tenant: String, allocator: PageAllocator, memory: PageMemory) throws(KVDError) -> KVSequence {
        let pageTokens = layout.pageTokens
        let need = image.heads.map { HeadCache.pagesNeeded($0.count, pageTokens: pageTokens) }
        var fresh = try allocator.allocate(need.reduce(0, +))[...]
        var heads: [HeadCache] = []
        for (h, head) in image.heads.enumerated() {
            let pages = Array(fresh.prefix(need[h]))
            fresh = fresh.dropFirst(need[h])
            var at = 0
            for run in HeadCache.runs(pages: pages, start: 0, count: head.count, pageTokens: pageTokens) {
                let n = run.count * layout.tokenBytes
                keys[h].withUnsafeBytes { memory.key(run.page, slot: run.slot, layout).copyMemory(from: $0.baseAddress!.advanced(by: at), byteCount: n) }
                values[h].withUnsafeBytes { memory.value(run.page, slot: run.slot, layout).copyMemory(from: $0.baseAddress!.advanced(by: at), byteCount: n) }
                at += n
            }
            heads.append(HeadCache(pages: pages, count: head.count, positionRuns: head.positionRuns, logWeights: head.storedLogWeights))
        }
        var restored = image
        restored.id = id.raw
        restored.heads = heads
        return KVSequence(restoring: restored, layout: layout, tenant: tenant)
    }
}
