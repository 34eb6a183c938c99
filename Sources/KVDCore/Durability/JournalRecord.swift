/// One durable change to a segment's bookkeeping. Every change a client is told has happened is
/// one record, written (and, for a release, written before the pages go back) before the reply;
/// replaying the records in order rebuilds the state. See docs/DURABILITY.md.
public enum JournalRecord: Sendable, Equatable {
    /// The whole sequence as it is now: creation (also with an adopted prefix), Fork, Compact,
    /// aliasing — changes that rewrite page lists rather than extend them.
    case put(SequenceImage)
    /// An inline Append or a Commit: `tokens` more tokens, `newPages[h]` taken by head h.
    case append(id: UInt64, tokens: Int, newPages: [[PageID]])
    case pin(id: UInt64, pinned: Bool)
    case release(id: UInt64)
    /// The prefix index took a reference on `pages` (one per head) for block `hash`.
    case prefixInsert(hash: PrefixHash, parent: PrefixHash, pages: [PageID])
    /// The prefix index dropped block `hash` (written before its pages go back).
    case prefixEvict(hash: PrefixHash)

    private enum Tag: UInt8 {
        case put = 1, append = 2, pin = 3, release = 4, prefixInsert = 5, prefixEvict = 6
    }

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .put(let image):
            w.u8(Tag.put.rawValue)
            Self.encode(image, into: &w)
        case .append(let id, let tokens, let newPages):
            w.u8(Tag.append.rawValue)
            w.u64(id)
            w.count(tokens)
            w.count(newPages.count)
            for pages in newPages { Self.encode(pages, into: &w) }
        case .pin(let id, let pinned):
            w.u8(Tag.pin.rawValue)
            w.u64(id)
            w.bool(pinned)
        case .release(let id):
            w.u8(Tag.release.rawValue)
            w.u64(id)
        case .prefixInsert(let hash, let parent, let pages):
            w.u8(Tag.prefixInsert.rawValue)
            Self.encode(hash, into: &w)
            Self.encode(parent, into: &w)
            Self.encode(pages, into: &w)
        case .prefixEvict(let hash):
            w.u8(Tag.prefixEvict.rawValue)
            Self.encode(hash, into: &w)
        }
    }

    public var encoded: [UInt8] {
        var w = ByteWriter()
        encode(into: &w)
        return w.bytes
    }

    /// Decodes one record that must take all of `r`'s bytes.
    public static func decode(_ r: inout ByteReader) throws(DurableFormatError) -> JournalRecord {
        let raw = try r.u8("record kind")
        guard let tag = Tag(rawValue: raw) else { throw DurableFormatError("unknown record kind \(raw)") }
        let record: JournalRecord
        switch tag {
        case .put:
            record = .put(try decodeImage(&r))
        case .append:
            let id = try r.u64("append id")
            let tokens = Int(try r.u32("append tokens"))
            let heads = try r.count("append heads", itemBytes: 4)
            var pages: [[PageID]] = []
            pages.reserveCapacity(heads)
            for _ in 0..<heads { pages.append(try decodePages(&r)) }
            record = .append(id: id, tokens: tokens, newPages: pages)
        case .pin:
            record = .pin(id: try r.u64("pin id"), pinned: try r.bool("pinned"))
        case .release:
            record = .release(id: try r.u64("release id"))
        case .prefixInsert:
            record = .prefixInsert(hash: try decodeHash(&r), parent: try decodeHash(&r), pages: try decodePages(&r))
        case .prefixEvict:
            record = .prefixEvict(hash: try decodeHash(&r))
        }
        guard r.atEnd else { throw DurableFormatError("record kind \(raw) has \(r.remaining) bytes left over") }
        return record
    }

    // MARK: parts

    private static func encode(_ pages: [PageID], into w: inout ByteWriter) {
        w.count(pages.count)
        for p in pages { w.u32(p.raw) }
    }

    private static func decodePages(_ r: inout ByteReader) throws(DurableFormatError) -> [PageID] {
        let n = try r.count("page count", itemBytes: 4)
        var out: [PageID] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(PageID(try r.u32("page"))) }
        return out
    }

    private static func encode(_ h: PrefixHash, into w: inout ByteWriter) {
        w.u64(h.lo)
        w.u64(h.hi)
    }

    private static func decodeHash(_ r: inout ByteReader) throws(DurableFormatError) -> PrefixHash {
        PrefixHash(lo: try r.u64("hash"), hi: try r.u64("hash"))
    }

    private static func encode(_ s: SequenceImage, into w: inout ByteWriter) {
        w.u64(s.id)
        w.string(s.model)
        w.u64(s.generation)
        w.count(s.length)
        w.bool(s.everCompacted)
        w.bool(s.pinned)
        w.count(s.aliases.count)
        for a in s.aliases { w.i32(a.map { Int32($0) } ?? -1) }
        w.count(s.heads.count)
        for head in s.heads {
            encode(head.pages, into: &w)
            head.encodeTokens(into: &w)
        }
    }

    private static func decodeImage(_ r: inout ByteReader) throws(DurableFormatError) -> SequenceImage {
        let id = try r.u64("sequence id")
        let model = try r.string("model")
        let generation = try r.u64("generation")
        let length = Int(try r.u32("length"))
        let everCompacted = try r.bool("ever compacted")
        let pinned = try r.bool("pinned")
        let layers = try r.count("layers", itemBytes: 4)
        var aliases: [Int?] = []
        aliases.reserveCapacity(layers)
        for _ in 0..<layers {
            let a = try r.i32("alias")
            guard a >= -1 else { throw DurableFormatError("alias \(a)") }
            aliases.append(a < 0 ? nil : Int(a))
        }
        let headCount = try r.count("heads", itemBytes: 13)
        var heads: [HeadCache] = []
        heads.reserveCapacity(headCount)
        for _ in 0..<headCount {
            let pages = try decodePages(&r)
            heads.append(try HeadCache.decodeTokens(&r, pages: pages))
        }
        return SequenceImage(id: id, model: model, generation: generation, length: length, everCompacted: everCompacted,
                             pinned: pinned, aliases: aliases, heads: heads)
    }
}
