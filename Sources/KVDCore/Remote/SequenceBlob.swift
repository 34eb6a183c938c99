/// A sequence as the remote tier stores it (docs/REMOTE.md): self-describing (the model's layout
/// travels with it), versioned and checksummed, so a daemon that reads it back — this one after an
/// eviction, or another one — can tell it is whole and meant for the model it serves before the
/// sequence is created.
///
/// Bytes (version 2): magic `KVDSEQB1` (8), format version (u32), meta length (u32), checksum (u64:
/// xxHash64 of the payload, seed 0; it finds corruption, it authenticates nothing), payload length
/// (u64), then the payload: first the meta — the layout (model name, layers, KV heads, query
/// heads, head dim, dtype, page tokens), the sequence (id, generation, length, compaction mark,
/// aliases) and per (layer, head) its token count, position runs and log-weights if any — then
/// the K/V: per (layer, head) in order, the K bytes then the V bytes of its tokens (count ×
/// head_dim × dtype size each). All integers little-endian. The meta comes first so a restore
/// knows every head's size — and can take the pages — before the K/V arrives, and writes each
/// piece of it into the pages as it comes off the socket (`SequenceBlob.Arrival`).
public struct SequenceBlob: Sendable, Equatable {
    public static let magic = Array("KVDSEQB1".utf8)
    /// 2: meta first, then all K/V (version 1 interleaved each head's meta and K/V).
    public static let version: UInt32 = 2
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
    static func encode(layout: ModelLayout, image: SequenceImage, reusing buffer: [UInt8] = [],
                       writeKV: (Int, inout ByteWriter) -> Void) -> [UInt8] {
        let kvBytes = image.heads.reduce(0) { $0 + 2 * $1.count * layout.tokenBytes }
        let capacity = Self.headerBytes + 256 + kvBytes + image.heads.reduce(0) { $0 + 16 + 8 * $1.positionRuns.count + 4 * ($1.storedLogWeights?.count ?? 0) }
        var p = ByteWriter(reusing: buffer, capacity: capacity)
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
        for head in image.heads { head.encodeTokens(into: &p) }
        let metaBytes = p.bytes.count - Self.headerBytes
        // Each head's K/V is hashed right after it is written, while it is still in cache.
        var sum = XXHash64.Stream()
        p.bytes.withUnsafeBytes { sum.update(UnsafeRawBufferPointer(rebasing: $0[Self.headerBytes...])) }
        for h in image.heads.indices {
            let start = p.bytes.count
            writeKV(h, &p)
            p.bytes.withUnsafeBytes { sum.update(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        }
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u32(Self.version)
        w.u32(UInt32(metaBytes))  // a few KiB per head at most: fits
        w.u64(sum.digest())
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
    /// model it does not serve). `payloadChecksum`, when already known, saves hashing the payload again.
    public static func decode(_ bytes: [UInt8], payloadChecksum: UInt64? = nil,
                              layouts: (String) -> ModelLayout?) throws(DurableFormatError) -> SequenceBlob {
        let header = try Header(bytes)
        guard header.payloadBytes == UInt64(bytes.count - headerBytes) else {
            throw DurableFormatError("blob says \(header.payloadBytes) payload bytes but has \(bytes.count - headerBytes) (cut or padded)")
        }
        let actual = payloadChecksum ?? bytes.withUnsafeBytes { all in XXHash64.hash(UnsafeRawBufferPointer(rebasing: all[headerBytes...])) }
        guard actual == header.checksum else { throw DurableFormatError("blob checksum mismatch (corrupted)") }
        let meta = try Meta(bytes, header: header, layouts: layouts)
        var offsets: [Int] = []
        var at = headerBytes + header.metaBytes
        for head in meta.image.heads {
            offsets.append(at)
            at += 2 * head.count * meta.layout.tokenBytes  // Meta checked the total fits the blob
        }
        return SequenceBlob(layout: meta.layout, image: meta.image, storage: bytes, offsets: offsets)
    }

    /// The fixed 32 bytes in front: magic, version, meta length, checksum, payload length.
    struct Header {
        let metaBytes: Int
        let checksum: UInt64
        let payloadBytes: UInt64

        /// Reads and checks the header at the start of `bytes` (which may be longer).
        init(_ bytes: [UInt8]) throws(DurableFormatError) {
            var r = ByteReader(bytes, from: 0, to: min(bytes.count, headerBytes))
            guard try r.raw(8, "blob magic") == magic else { throw DurableFormatError("not a kvd sequence blob (bad magic)") }
            let v = try r.u32("blob version")
            guard v == version else { throw DurableFormatError("blob format version \(v); this kvd reads version \(version)") }
            metaBytes = Int(try r.u32("blob meta length"))
            checksum = try r.u64("blob checksum")
            payloadBytes = try r.u64("blob length")
            guard UInt64(metaBytes) <= payloadBytes else {
                throw DurableFormatError("blob says its meta is \(metaBytes) bytes, more than its \(payloadBytes)-byte payload")
            }
        }
    }

    /// The meta section (layout and bookkeeping), read from `bytes` (the header and at least the
    /// meta) and checked against the model it names and the header's K/V length.
    struct Meta {
        let layout: ModelLayout
        let image: SequenceImage

        init(_ bytes: [UInt8], header: Header, layouts: (String) -> ModelLayout?) throws(DurableFormatError) {
            guard bytes.count >= headerBytes + header.metaBytes else { throw DurableFormatError("blob cut inside its meta") }
            var p = ByteReader(bytes, from: headerBytes, to: headerBytes + header.metaBytes)
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
            var kvBytes: UInt64 = 0
            for _ in 0..<headCount {
                let head = try HeadCache.decodeTokens(&p, pages: [])
                // count < 2^32, tokenBytes a few KiB, heads a few thousand: far from UInt64's range.
                kvBytes += 2 * UInt64(head.count) * UInt64(expected.tokenBytes)
                heads.append(head)
            }
            guard p.atEnd else { throw DurableFormatError("blob meta has \(p.remaining) bytes past its last head") }
            guard kvBytes == header.payloadBytes - UInt64(header.metaBytes) else {
                throw DurableFormatError("blob heads hold \(kvBytes) K/V bytes but the blob carries \(header.payloadBytes - UInt64(header.metaBytes))")
            }
            let image = SequenceImage(id: id, model: name, generation: generation, length: seqLength, everCompacted: everCompacted,
                                      pinned: false, aliases: aliases, heads: heads)
            try image.validateContents(expected)
            layout = expected
            self.image = image
        }
    }
}
