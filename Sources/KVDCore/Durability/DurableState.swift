/// The durable bookkeeping of one segment — sequences and prefix-index blocks — as rebuilt by
/// applying journal records in order. The journal keeps one up to date as it writes (so a
/// checkpoint can write it out as a snapshot) and a restart rebuilds one from the snapshot and
/// the journal, then checks it against the segment before serving anything.
///
/// `apply` refuses a record that does not fit the state (an append to an unknown sequence, a
/// block under a missing parent...): the files are then not what this code wrote, and adopting
/// them would serve wrong K/V. Not thread-safe: the journal keeps it behind its lock.
public struct DurableState: Sendable {
    public struct Block: Sendable, Equatable {
        public let parent: PrefixHash
        public let pages: [PageID]
        /// 0 for a prompt's first block: snapshots list parents before children.
        public let depth: Int
        public var children: Int
    }

    public let layouts: [String: ModelLayout]
    public let pageCount: Int
    public private(set) var sequences: [UInt64: SequenceImage] = [:]
    public private(set) var blocks: [PrefixHash: Block] = [:]

    public init(layouts: [ModelLayout], pageCount: Int) {
        self.layouts = Dictionary(layouts.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.pageCount = pageCount
    }

    public mutating func apply(_ record: JournalRecord) throws(DurableFormatError) {
        switch record {
        case .put(let image):
            guard let layout = layouts[image.model] else { throw DurableFormatError("sequence \(image.id): unknown model '\(image.model)'") }
            try image.validate(layout, pageCount: pageCount)
            sequences[image.id] = image
        case .append(let id, let tokens, let newPages):
            guard let model = sequences[id]?.model, let layout = layouts[model] else { throw DurableFormatError("append to unknown sequence \(id)") }
            // In place (no copy of the image's page lists), checked before anything changes.
            try sequences[id]!.append(tokens: tokens, newPages: newPages, layout: layout, pageCount: pageCount)
        case .pin(let id, let pinned):
            guard sequences[id] != nil else { throw DurableFormatError("pin of unknown sequence \(id)") }
            sequences[id]!.pinned = pinned
        case .release(let id):
            guard sequences.removeValue(forKey: id) != nil else { throw DurableFormatError("release of unknown sequence \(id)") }
        case .prefixInsert(let hash, let parent, let pages):
            guard blocks[hash] == nil, hash != .root else { throw DurableFormatError("block \(hash) indexed twice") }
            guard !pages.isEmpty, pages.allSatisfy({ Int($0.raw) < pageCount }) else { throw DurableFormatError("block \(hash): pages out of range") }
            var depth = 0
            if parent != .root {
                guard let p = blocks[parent] else { throw DurableFormatError("block \(hash) under unknown parent \(parent)") }
                depth = p.depth + 1
                blocks[parent]!.children += 1
            }
            blocks[hash] = Block(parent: parent, pages: pages, depth: depth, children: 0)
        case .prefixEvict(let hash):
            guard let b = blocks[hash], b.children == 0 else { throw DurableFormatError("evict of unknown or inner block \(hash)") }
            blocks[hash] = nil
            if b.parent != .root { blocks[b.parent]!.children -= 1 }
        }
    }

    /// Records that rebuild this state from nothing: every sequence, then every block with
    /// parents before children. Sorted, so equal states give equal snapshots.
    public func snapshot() -> [JournalRecord] {
        let seqs = sequences.keys.sorted().map { JournalRecord.put(sequences[$0]!) }
        let ordered = blocks.sorted { a, b in
            a.value.depth != b.value.depth ? a.value.depth < b.value.depth : (a.key.hi, a.key.lo) < (b.key.hi, b.key.lo)
        }
        return seqs + ordered.map { JournalRecord.prefixInsert(hash: $0.key, parent: $0.value.parent, pages: $0.value.pages) }
    }

    /// Holders of every page (reference counts): each sequence head listing it, each block listing it.
    /// Checks what sharing allows: a page appears once per holder, and a partly filled last page
    /// (the one appends write into) has exactly one holder.
    public func holders() throws(DurableFormatError) -> [Int] {
        var refs = [Int](repeating: 0, count: pageCount)
        var tails: [PageID] = []
        for id in sequences.keys.sorted() {
            let s = sequences[id]!
            let pageTokens = layouts[s.model]!.pageTokens
            var own = Set<PageID>()
            for head in s.heads {
                for p in head.pages {
                    guard own.insert(p).inserted else { throw DurableFormatError("sequence \(id) lists page \(p.raw) twice") }
                    refs[Int(p.raw)] += 1
                }
                if head.count % pageTokens != 0, let last = head.pages.last { tails.append(last) }
            }
        }
        for b in blocks.values {
            for p in b.pages { refs[Int(p.raw)] += 1 }
        }
        for p in tails where refs[Int(p.raw)] != 1 {
            throw DurableFormatError("page \(p.raw) is a partly filled last page with \(refs[Int(p.raw)]) holders")
        }
        return refs
    }
}
