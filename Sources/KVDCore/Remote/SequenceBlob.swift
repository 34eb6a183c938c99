/// A sequence as the remote tier stores it (docs/REMOTE.md): self-describing (the model's layout
/// travels with it), versioned and checksummed, so a daemon that reads it back — this one after an
/// eviction, or another one — can tell it is whole and meant for the model it serves before a byte
/// reaches a page.
///
/// Bytes: magic `KVDSEQB1` (8), format version (u32), reserved (u32), checksum (u64: xxHash64 of
/// the payload, seed 0; it finds corruption, it authenticates nothing), payload length
/// (u64), then the payload: the layout (model name, layers, KV heads, query heads, head dim, dtype,
/// page tokens), the sequence (id, generation, length, compaction mark, aliases) and per (layer,
/// head): token count, position runs, log-weights if any, then the K bytes and the V bytes of its
/// tokens in order (count × head_dim × dtype size each). All integers little-endian.
public struct SequenceBlob: Sendable, Equatable {
    public static let magic = Array("KVDSEQB1".utf8)
    public static let version: UInt32 = 1
    static let headerBytes = 32

    public let layout: ModelLayout
    /// The bookkeeping, with no pages (pages are local to a segment).
    public let image: SequenceImage
    /// The K/V bytes: head h's keys start at `offsets[h]` in `storage`, its values right after
    /// (count × token bytes each). A decoded blob points into the bytes it was read from: restoring
    /// copies each head once, from the store's reply straight into the pages.
    private let storage: [UInt8]
    private let offsets: [Int]

    public init(layout: ModelLayout, image: SequenceImage, keys: [[UInt8]], values: [[UInt8]]) {
        var storage: [UInt8] = []
        var offsets: [Int] = []
        for (k, v) in zip(keys, values) {
            offsets.append(storage.count)
            storage += k
            storage += v
        }
        self.init(layout: layout, image: image, storage: storage, offsets: offsets)
    }

    private init(layout: ModelLayout, image: SequenceImage, storage: [UInt8], offsets: [Int]) {
        self.layout = layout
        self.image = image
        self.storage = storage
        self.offsets = offsets
    }

    public static func == (a: SequenceBlob, b: SequenceBlob) -> Bool {
        a.layout == b.layout && a.image == b.image && a.keys == b.keys && a.values == b.values
    }

    private func headBytes(_ h: Int) -> Int { image.heads[h].count * layout.tokenBytes }
    /// Per (layer, head): its tokens' K bytes, and V bytes, in token order (copies).
    public var keys: [[UInt8]] { image.heads.indices.map { h in Array(storage[offsets[h]..<(offsets[h] + headBytes(h))]) } }
    public var values: [[UInt8]] {
        image.heads.indices.map { h in Array(storage[(offsets[h] + headBytes(h))..<(offsets[h] + 2 * headBytes(h))]) }
    }

    /// Bytes of K and V this blob carries.
    public var kvBytes: Int { image.heads.indices.reduce(0) { $0 + 2 * headBytes($1) } }

    /// Runs `body` with head `h`'s K bytes and V bytes, without copying them.
    public func withHead<T>(_ h: Int, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> T) -> T {
        let n = headBytes(h)
        return storage.withUnsafeBytes { all in
            body(UnsafeRawBufferPointer(rebasing: all[offsets[h]..<(offsets[h] + n)]),
                 UnsafeRawBufferPointer(rebasing: all[(offsets[h] + n)..<(offsets[h] + 2 * n)]))
        }
    }

    // MARK: encoding

    public func encoded() -> [UInt8] {
        Self.encode(layout: layout, image: image) { h, w in withHead(h) { k, v in w.raw(k); w.raw(v) } }
    }

    /// The blob's bytes for `image` of `layout`, `writeKV(h, &w)` appending head h's K then V bytes.
    private static func encode(layout: ModelLayout, image: SequenceImage, writeKV: (Int, inout ByteWriter) -> Void) -> [UInt8] {
        let kvBytes = image.heads.reduce(0) { $0 + 2 * $1.count * layout.tokenBytes }
        var p = ByteWriter(capacity: Self.headerBytes + 256 + kvBytes + image.heads.reduce(0) { $0 + 16 + 8 * $1.positionRuns.count + 4 * ($1.storedLogWeights?.count ?? 0) })
        // The header is reserved first and filled in last: the K/V is copied once.
        p.raw([UInt8](repeating: 0, count: Self.headerBytes))
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
            writeKV(h, &p)
        }
        let sum = p.bytes.withUnsafeBytes { XXHash64.hash(UnsafeRawBufferPointer(rebasing: $0[Self.headerBytes...])) }
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u32(Self.version)
        w.u32(0)
        w.u64(sum)
        w.u64(UInt64(p.bytes.count - Self.headerBytes))
        p.overwrite(at: 0, with: w.bytes)
        return p.bytes
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
        let matches = bytes.withUnsafeBytes { all in XXHash64.hash(UnsafeRawBufferPointer(rebasing: all[headerBytes...])) == sum }
        guard matches else { throw DurableFormatError("blob checksum mismatch (corrupted)") }
        var p = ByteReader(bytes, from: headerBytes)
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
        var offsets: [Int] = []
        for h in 0..<headCount {
            let head = try HeadCache.decodeTokens(&p, pages: [])
            // count ≤ 2^32 and tokenBytes ≤ a few KiB: no overflow in Int, and `skip` checks the bytes left.
            offsets.append(p.offset)
            try p.skip(2 * head.count * expected.tokenBytes, "head \(h) keys and values")
            heads.append(head)
        }
        guard p.atEnd else { throw DurableFormatError("blob has \(p.remaining) bytes past its last head") }
        let image = SequenceImage(id: id, model: name, generation: generation, length: seqLength, everCompacted: everCompacted,
                                  pinned: false, aliases: aliases, heads: heads)
        try image.validateContents(expected)
        return SequenceBlob(layout: expected, image: image, storage: bytes, offsets: offsets)
    }
}

extension SequenceBlob {
    /// The encoded blob of `seq`, its K/V read straight out of its pages into the blob (one copy;
    /// call on the sequence's queue): what an offload ships.
    public static func encode(capturing seq: KVSequence, memory: PageMemory) -> [UInt8] {
        let layout = seq.layout
        var image = seq.image(pinned: false)
        for h in image.heads.indices { image.heads[h].pages = [] }
        return encode(layout: layout, image: image) { h, w in
            let head = seq.heads[h]
            let runs = HeadCache.runs(pages: head.pages, start: 0, count: head.count, pageTokens: layout.pageTokens)
            for run in runs { w.raw(UnsafeRawBufferPointer(start: memory.key(run.page, slot: run.slot, layout), count: run.count * layout.tokenBytes)) }
            for run in runs { w.raw(UnsafeRawBufferPointer(start: memory.value(run.page, slot: run.slot, layout), count: run.count * layout.tokenBytes)) }
        }
    }

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
            withHead(h) { k, v in
                var at = 0
                for run in HeadCache.runs(pages: pages, start: 0, count: head.count, pageTokens: pageTokens) {
                    let n = run.count * layout.tokenBytes
                    memory.key(run.page, slot: run.slot, layout).copyMemory(from: k.baseAddress! + at, byteCount: n)
                    memory.value(run.page, slot: run.slot, layout).copyMemory(from: v.baseAddress! + at, byteCount: n)
                    at += n
                }
            }
            heads.append(HeadCache(pages: pages, count: head.count, positionRuns: head.positionRuns, logWeights: head.storedLogWeights))
        }
        var restored = image
        restored.id = id.raw
        restored.heads = heads
        return KVSequence(restoring: restored, layout: layout, tenant: tenant)
    }
}
