import KVDConfig
import KVDCore
import KVDProtocol
import Synchronization

/// One tenant's prefix cache: its `PrefixIndex` behind a lock, and a block hasher per model whose
/// salt is the tenant's name, so two tenants' hashes of the same tokens differ and they never share
/// pages (each tenant also has its own segment). Lock order: a tenant's sequence table, then this,
/// then the page allocator's own lock.
final class TenantPrefix: Sendable {
    let enabled: Bool
    private let hashers: [String: PrefixHasher]
    private struct State {
        let index: PrefixIndex
        var evictedPages: UInt64 = 0
    }
    private let state: Mutex<State>
    /// Index changes are recorded under the index lock, so the journal lists parents before
    /// children and evictions before the pages go back.
    private let journal: SegmentJournal?

    /// `key`: the block-hash key when the config names none (a durable segment keeps its own, so
    /// blocks recovered after a restart still match); random per start otherwise.
    init(config: Configuration.Prefix, tenant: String, models: [ModelLayout], pages: PageAllocator,
         journal: SegmentJournal? = nil, key fallbackKey: [UInt8]? = nil) {
        enabled = config.enabled
        self.journal = journal
        // A random key per start when none is configured: hashes then mean nothing after a
        // restart, which is fine while the index lives in this process.
        let key = (config.key ?? fallbackKey).flatMap { SipKey(bytes: $0) }
            ?? SipKey(k0: UInt64.random(in: .min ... .max), k1: UInt64.random(in: .min ... .max))
        var h: [String: PrefixHasher] = [:]
        for m in models {
            // Names and salts are bounded by config loading; a failure here would be a bug.
            do throws(KVDError) { h[m.name] = try PrefixHasher(key: key, model: m.name, tenantSalt: Array(tenant.utf8)) } catch {
                preconditionFailure("prefix hasher for model '\(m.name)': \(error.message)")
            }
        }
        hashers = h
        state = Mutex(State(index: PrefixIndex(allocator: pages)))
    }

    /// The hasher of `model` when prefix reuse is on.
    func hasher(_ model: String) -> PrefixHasher? { enabled ? hashers[model] : nil }

    /// Indexes blocks that just became full: `pages[i]` holds block `blocks[i]` in every head.
    /// Blocks already indexed (or under an evicted parent) are skipped by the index.
    /// Returns the blocks it indexed (for the remote tier to publish).
    @discardableResult
    func insert(_ blocks: [PrefixTracker.FullBlock], pages: [[PageID]]) -> [(PrefixTracker.FullBlock, [PageID])] {
        state.withLock { s in
            var added: [(PrefixTracker.FullBlock, [PageID])] = []
            for (b, p) in zip(blocks, pages) where s.index.insert(hash: b.hash, parent: b.parent, pages: p) {
                journal?.record(.prefixInsert(hash: b.hash, parent: b.parent, pages: p))
                added.append((b, p))
            }
            return added
        }
    }

    /// Indexes a block another daemon computed (fetched from the remote tier) held in `pages`;
    /// false when its parent is not indexed (any more) or it already is.
    func importBlock(hash: PrefixHash, parent: PrefixHash, pages: [PageID]) -> Bool {
        state.withLock { s in
            guard s.index.insert(hash: hash, parent: parent, pages: pages) else { return false }
            journal?.record(.prefixInsert(hash: hash, parent: parent, pages: pages))
            return true
        }
    }

    /// How many of `hashes`, from block 0, are indexed here (changes nothing, counts nothing).
    func cachedRun(_ hashes: [PrefixHash]) -> Int {
        state.withLock { s in
            var n = 0
            while n < hashes.count, s.index.contains(hashes[n]) { n += 1 }
            return n
        }
    }

    /// The longest cached run of `hashes` from block 0 (marks it used; counts hits and misses).
    func lookup(_ hashes: [PrefixHash]) -> Int {
        state.withLock { $0.index.lookup(hashes: hashes).count }
    }

    /// Looks `hashes` up and, under the same lock (so eviction cannot drop the pages between the two),
    /// hands the found blocks' pages per head and their hashes to `adopt`, which must retain them.
    func adopt<T>(_ hashes: [PrefixHash], _ adopt: ([[PageID]], [PrefixHash]) throws(KVDError) -> T) throws(KVDError) -> T {
        let r: Result<T, KVDError> = state.withLock { s in
            let found = s.index.lookup(hashes: hashes)
            do throws(KVDError) { return .success(try adopt(PrefixIndex.pagesPerHead(found), found.map(\.hash))) } catch { return .failure(error) }
        }
        return try r.get()
    }

    /// Frees up to `limit` pages of cached blocks no sequence uses (least recently used leaves
    /// first). The memory manager calls it before compressing or evicting anything.
    func evictUnused(limit: Int) -> Int {
        state.withLock { s in
            let freed = s.index.evictUnused(limit: limit) { dropped in
                journal?.record(.prefixEvict(hash: dropped.hash))
            }
            s.evictedPages &+= UInt64(freed)
            return freed
        }
    }

    /// How many of `pages` come back to the arena when each loses one holder: those with no other
    /// holder, or only this index (the memory manager drops such unused blocks right after it acts).
    func returnedOnRelease(_ pages: [PageID]) -> Int {
        state.withLock { s in
            let counts = s.index.allocator.refCounts(of: pages)
            return zip(pages, counts).reduce(0) { n, pc in n + (pc.1 == 1 || (pc.1 == 2 && s.index.lists(pc.0)) ? 1 : 0) }
        }
    }

    /// Rebuilds the index from a recovered journal (blocks parents first); the page counts already
    /// include the index's references.
    func restore(_ blocks: [(hash: PrefixHash, parent: PrefixHash, pages: [PageID])]) {
        state.withLock { s in
            for b in blocks { s.index.restore(hash: b.hash, parent: b.parent, pages: b.pages) }
        }
    }

    func stats(pageBytes: Int) -> Kvd_V1_PrefixStats {
        state.withLock { s in
            let u = s.index.usage()
            var out = Kvd_V1_PrefixStats()
            out.enabled = enabled
            out.hits = UInt64(s.index.hits)
            out.misses = UInt64(s.index.misses)
            out.cachedBlocks = UInt64(s.index.entryCount)
            out.cachedPages = UInt32(clamping: u.pages)
            out.unusedPages = UInt32(clamping: u.unusedPages)
            out.sharedPages = UInt32(clamping: u.sharedPages)
            out.pagesSaved = UInt64(u.pagesSaved)
            out.bytesSaved = UInt64(u.bytesSaved(pageBytes: pageBytes))
            out.evictions = UInt64(s.index.evictions)
            out.evictedPages = s.evictedPages
            return out
        }
    }
}
