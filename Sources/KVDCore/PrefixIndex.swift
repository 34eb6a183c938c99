/// Cached prompt blocks by chained hash (`PrefixHash`): for each block, the page of every
/// (layer, head) holding its K/V, so a new sequence with the same prompt can adopt those pages
/// instead of recomputing them. The index holds one reference on every page it lists, so a block
/// outlives the sequences that wrote it and stays as cache until evicted.
///
/// Entries form a forest: block 0's parent is `PrefixHash.root`, block k's is block k−1's hash. A
/// block is inserted only under an indexed parent and evicted only once it has no children, so
/// every indexed block is reachable from block 0 and descendants go before their ancestors.
///
/// Not thread-safe: the server keeps one per tenant behind a lock. See docs/PREFIX.md.
public final class PrefixIndex {
    public struct Entry: Sendable, Equatable {
        public let hash: PrefixHash
        public let parent: PrefixHash
        /// 0 for the first block of a prompt.
        public let block: Int
        /// One page per (layer, head), layer-major, as `KVSequence.heads`.
        public let pages: [PageID]
    }

    private struct Node {
        var entry: Entry
        var children = 0
        /// Recency for eviction: larger is more recent.
        var lastUsed: UInt64
    }

    public let allocator: PageAllocator
    private var nodes: [PrefixHash: Node] = [:]
    /// Every page some entry lists (a page belongs to at most one block: a block's hash is
    /// indexed once, and later copies of the same tokens live in other pages that are not listed).
    private var listed: Set<PageID> = []
    private var clock: UInt64 = 0

    /// Blocks asked for by `lookup` that were found / not found (counted up to the first missing
    /// one; the rest of a prompt is a miss too).
    public private(set) var hits = 0
    public private(set) var misses = 0
    /// Entries dropped by `evictUnused` since the start.
    public private(set) var evictions = 0

    public init(allocator: PageAllocator) { self.allocator = allocator }

    public var entryCount: Int { nodes.count }
    public func contains(_ hash: PrefixHash) -> Bool { nodes[hash] != nil }
    /// Whether the index holds a reference on `page`.
    public func lists(_ page: PageID) -> Bool { listed.contains(page) }

    private func tick() -> UInt64 {
        clock += 1
        return clock
    }

    /// Indexes block `hash` (child of `parent`, `PrefixHash.root` for block 0) held in `pages`, and
    /// takes one reference on each. Returns false and takes nothing when the hash is already
    /// indexed (the first copy stays: sequences may already share it) or the parent is not (the
    /// block would be unreachable: lookups walk from block 0).
    @discardableResult
    public func insert(hash: PrefixHash, parent: PrefixHash, pages: [PageID]) -> Bool {
        insert(hash: hash, parent: parent, pages: pages, retaining: true)
    }

    /// `insert` for a restart rebuilding the index from the journal: the page allocator's counts
    /// already include the index's reference (`PageAllocator.restore`), so none is taken.
    @discardableResult
    public func restore(hash: PrefixHash, parent: PrefixHash, pages: [PageID]) -> Bool {
        insert(hash: hash, parent: parent, pages: pages, retaining: false)
    }

    private func insert(hash: PrefixHash, parent: PrefixHash, pages: [PageID], retaining: Bool) -> Bool {
        precondition(!pages.isEmpty && hash != .root)
        guard nodes[hash] == nil else { return false }
        var block = 0
        if parent != .root {
            guard let p = nodes[parent] else { return false }
            block = p.entry.block + 1
            nodes[parent]!.children += 1
        }
        if retaining { allocator.retain(pages) }
        listed.formUnion(pages)
        nodes[hash] = Node(entry: Entry(hash: hash, parent: parent, block: block, pages: pages), lastUsed: tick())
        return true
    }

    /// The longest run of `hashes` (a prompt's block hashes, block 0 first) that is indexed, contiguous
    /// from block 0; marks them used. Takes no references: the caller adopts the pages (which
    /// retains them) before anything can evict them — under the same lock as this lookup.
    public func lookup(hashes: [PrefixHash]) -> [Entry] {
        var found: [Entry] = []
        var parent = PrefixHash.root
        for h in hashes {
            guard let n = nodes[h], n.entry.parent == parent else { break }
            found.append(n.entry)
            parent = h
        }
        touch(found.map(\.hash))
        hits += found.count
        misses += hashes.count - found.count
        return found
    }

    /// Marks `hashes` used now (unknown ones are ignored), e.g. when a sequence adopts them.
    public func touch(_ hashes: [PrefixHash]) {
        let now = tick()
        for h in hashes where nodes[h] != nil { nodes[h]!.lastUsed = now }
    }

    /// Per head, the pages of `entries` (blocks 0, 1, ... in order): what `KVSequence.adopt` takes.
    public static func pagesPerHead(_ entries: [Entry]) -> [[PageID]] {
        guard let first = entries.first else { return [] }
        return first.pages.indices.map { h in entries.map { $0.pages[h] } }
    }

    /// Drops least recently used entries whose pages nobody but the index holds (reference count 1)
    /// and that have no children, until `limit` pages went back to the arena or none is left to
    /// drop. A parent whose last child goes becomes a candidate in turn, so chains shrink from the
    /// end. Returns the pages freed. O(entries · log entries) per call: it runs under memory
    /// pressure, not per request.
    /// `willDrop` hears of each entry just before its pages are released (crash safety records the
    /// eviction first, so a restart never lists pages another sequence has taken since).
    @discardableResult
    public func evictUnused(limit: Int, willDrop: (Entry) -> Void = { _ in }) -> Int {
        guard limit > 0 else { return 0 }
        // Candidates, most recent first, so the least recent is popped from the end.
        var candidates = nodes.values.filter { $0.children == 0 }.map(\.entry.hash)
            .sorted { nodes[$0]!.lastUsed > nodes[$1]!.lastUsed }
        var freed = 0
        while freed < limit, let h = candidates.popLast() {
            guard let n = nodes[h], n.children == 0, !allocator.anyShared(n.entry.pages) else { continue }
            willDrop(n.entry)
            nodes[h] = nil
            listed.subtract(n.entry.pages)
            evictions += 1
            freed += allocator.release(n.entry.pages)
            let parent = n.entry.parent
            guard parent != .root else { continue }
            nodes[parent]!.children -= 1
            if nodes[parent]!.children == 0 {
                let used = nodes[parent]!.lastUsed
                let at = candidates.firstIndex { nodes[$0].map { $0.lastUsed < used } ?? true } ?? candidates.count
                candidates.insert(parent, at: at)
            }
        }
        return freed
    }

    /// Drops every entry and its references (a tenant going away, or the daemon stopping).
    /// Returns the pages freed.
    @discardableResult
    public func removeAll() -> Int {
        var freed = 0
        for n in nodes.values { freed += allocator.release(n.entry.pages) }
        nodes = [:]
        listed = []
        return freed
    }

    /// What the index holds right now, read from the pages' reference counts (O(pages indexed)).
    public struct Usage: Sendable, Equatable {
        /// Pages the index references.
        public var pages = 0
        /// Of those, pages no sequence holds: cache only, the first thing to evict under pressure.
        public var unusedPages = 0
        /// Of those, pages held by two or more sequences besides the index.
        public var sharedPages = 0
        /// Copies that sharing avoids now: Σ over indexed pages of (sequences holding it − 1).
        public var pagesSaved = 0
        public init(pages: Int = 0, unusedPages: Int = 0, sharedPages: Int = 0, pagesSaved: Int = 0) {
            self.pages = pages
            self.unusedPages = unusedPages
            self.sharedPages = sharedPages
            self.pagesSaved = pagesSaved
        }
        public func bytesSaved(pageBytes: Int) -> Int { pagesSaved * pageBytes }
    }

    public func usage() -> Usage {
        var u = Usage()
        for n in nodes.values {
            for r in allocator.refCounts(of: n.entry.pages) {
                u.pages += 1
                if r == 1 { u.unusedPages += 1 }
                if r >= 3 { u.sharedPages += 1 }
                u.pagesSaved += max(0, r - 2)
            }
        }
        return u
    }
}
