/// Everything durable about one sequence: what a restarted kvd needs to serve it again, bit-exact.
/// The K/V bytes themselves stay in the shared-memory pages; this is the bookkeeping that says
/// which pages hold which tokens. Leases and connections are not part of it (a restart starts
/// every lease afresh), nor are open reservations (never acknowledged as committed).
public struct SequenceImage: Sendable, Equatable {
    public var id: UInt64
    public var model: String
    public var generation: UInt64
    /// Logical length: tokens ever appended (the next token's position).
    public var length: Int
    public var everCompacted: Bool
    public var pinned: Bool
    /// Per layer, the owner layer it reads (KVSharer), or nil.
    public var aliases: [Int?]
    /// Per (layer, head), layer-major.
    public var heads: [HeadCache]

    public init(id: UInt64, model: String, generation: UInt64 = 1, length: Int = 0, everCompacted: Bool = false,
                pinned: Bool = false, aliases: [Int?], heads: [HeadCache]) {
        self.id = id
        self.model = model
        self.generation = generation
        self.length = length
        self.everCompacted = everCompacted
        self.pinned = pinned
        self.aliases = aliases
        self.heads = heads
    }

    /// A new, empty sequence of `layout`.
    public init(id: UInt64, layout: ModelLayout, pinned: Bool = false) {
        self.init(id: id, model: layout.name, pinned: pinned,
                  aliases: Array(repeating: nil, count: layout.layers),
                  heads: Array(repeating: HeadCache(), count: layout.headCount))
    }

    /// The bookkeeping half of an append of `tokens` tokens whose new pages are `newPages[h]`
    /// (empty for aliased layers): what `KVSequence.append` and `commit` do besides writing bytes.
    /// Checks everything first and changes nothing when it throws. O(heads + new pages), whatever
    /// the sequence's length: a decode loop appends one token at a time.
    public mutating func append(tokens: Int, newPages: [[PageID]], layout: ModelLayout, pageCount: Int) throws(DurableFormatError) {
        guard tokens > 0, newPages.count == heads.count,
              let first = Int32(exactly: length), length + tokens <= KVSequence.maxLength else {
            throw DurableFormatError("sequence \(id): append of \(tokens) tokens with \(newPages.count) page lists does not fit its \(heads.count) heads at length \(length)")
        }
        for h in heads.indices {
            let new = newPages[h]
            if aliases[h / layout.kvHeads] != nil {
                guard new.isEmpty else { throw DurableFormatError("sequence \(id): pages for aliased head \(h)") }
                continue
            }
            guard heads[h].pages.count + new.count == HeadCache.pagesNeeded(heads[h].count + tokens, pageTokens: layout.pageTokens),
                  new.allSatisfy({ Int($0.raw) < pageCount }) else {
                throw DurableFormatError("sequence \(id): head \(h) gets \(new.count) pages for \(tokens) more tokens, or pages outside the segment")
            }
        }
        for h in heads.indices where aliases[h / layout.kvHeads] == nil {
            heads[h].pages += newPages[h]
            heads[h].extend(first: first, tokens: tokens)
        }
        length += tokens
        // The live sequence drops its sliding layers' out-of-window pages right after recording
        // the append; replaying it drops the same ones.
        freeOutOfWindow(layout)
    }

    /// Checks the image against `layout` and a segment of `pageCount` pages: every head holds
    /// exactly the pages its tokens need, page ids in range, positions and log-weights one per
    /// token, aliases pointing at earlier unaliased layers. What a restart relies on before it
    /// serves anything from the pages.
    public func validate(_ layout: ModelLayout, pageCount: Int) throws(DurableFormatError) {
        try validateContents(layout)
        for (h, head) in heads.enumerated() {
            guard head.pages.count == HeadCache.pagesNeeded(head.count, pageTokens: layout.pageTokens),
                  head.pages.allSatisfy({ Int($0.raw) < pageCount }) else {
                throw DurableFormatError("sequence \(id): head \(h) (\(head.count) tokens) holds \(head.pages.count) pages, or pages outside the segment")
            }
        }
    }

    /// `validate` without the pages: counts, positions, log-weights, aliases and the length agree
    /// with each other and `layout` (a remote-tier blob, which carries no pages).
    public func validateContents(_ layout: ModelLayout) throws(DurableFormatError) {
        let what = "sequence \(id) (model '\(model)')"
        guard model == layout.name, heads.count == layout.headCount, aliases.count == layout.layers else {
            throw DurableFormatError("\(what): \(heads.count) heads / \(aliases.count) layers do not match model '\(layout.name)'")
        }
        guard length >= 0, length <= KVSequence.maxLength, generation >= 1 else {
            throw DurableFormatError("\(what): length \(length) or generation \(generation) out of range")
        }
        for (l, owner) in aliases.enumerated() {
            guard let o = owner else { continue }
            guard o >= 0, o < l, aliases[o] == nil else { throw DurableFormatError("\(what): layer \(l) aliases layer \(o)") }
        }
        for (h, head) in heads.enumerated() {
            let aliased = aliases[h / layout.kvHeads] != nil
            guard head.count >= 0, head.count <= length, !aliased || head.count == 0,
                  head.positionRuns.reduce(0, { $0 + Int($1.count) }) == head.count,
                  head.positionRuns.allSatisfy({ $0.count > 0 && $0.first >= 0 && Int($0.first) + Int($0.count) <= length }),
                  (head.storedLogWeights?.count ?? head.count) == head.count else {
                throw DurableFormatError("\(what): head \(h) (\(head.count) tokens) is inconsistent")
            }
        }
    }
}
