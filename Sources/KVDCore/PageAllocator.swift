import Synchronization

/// The arena's free list. Shared by every sequence, so it is the one piece of state behind a lock;
/// everything else about a sequence is touched by one request at a time.
///
/// A LIFO stack of free page ids: O(1) allocate and free, no allocation per call, and recently freed
/// pages (still warm in cache) are handed out first. A per-page "in use" bit catches double frees,
/// which would otherwise hand the same page to two heads.
public final class PageAllocator: Sendable {
    private struct State {
        var free: [PageID]
        var inUse: [Bool]
    }

    private let state: Mutex<State>
    public let pageCount: Int
    /// Most pages in use at once (a tenant's quota); `pageCount` when there is none.
    public let limit: Int
    /// Names the quota in errors, e.g. "tenant 'a' quota (quotas.pages)"; nil when there is none.
    private let quotaName: String?

    /// `quota` caps the pages in use below `pageCount` (0 or nil = no cap).
    public init(pageCount: Int, quota: Int? = nil, quotaName: String? = nil) {
        precondition(pageCount >= 0)
        self.pageCount = pageCount
        let capped = quota.map { $0 > 0 && $0 < pageCount } ?? false
        limit = capped ? quota! : pageCount
        self.quotaName = capped ? quotaName : nil
        // Reversed so that the first pages handed out are 0, 1, 2, ... (easier to read in tests and dumps).
        let free = (0..<pageCount).reversed().map { PageID(UInt32($0)) }
        state = Mutex(State(free: free, inUse: Array(repeating: false, count: pageCount)))
    }

    public var freeCount: Int { state.withLock { $0.free.count } }
    public var usedCount: Int { pageCount - freeCount }

    /// Takes `count` pages, or none at all when fewer are free (so a failed append changes nothing).
    public func allocate(_ count: Int) throws(KVDError) -> [PageID] {
        precondition(count >= 0)
        if count == 0 { return [] }
        let limit = self.limit
        let taken: [PageID]? = state.withLock { s in
            guard s.free.count >= count, pageCount - s.free.count <= limit - count else { return nil }
            let pages = Array(s.free.suffix(count).reversed())
            s.free.removeLast(count)
            for p in pages { s.inUse[Int(p.raw)] = true }
            return pages
        }
        guard let taken else {
            if let quotaName, pageCount - freeCount + count > limit {
                throw .resourceExhausted(
                    "\(quotaName) of \(limit) pages reached: need \(count) more pages, \(max(0, limit - usedCount)) left under the quota; release or compact sequences, or raise the quota")
            }
            throw .resourceExhausted(
                "arena full: need \(count) free pages, \(freeCount) left; release or compact sequences, or raise arena.size_bytes")
        }
        return taken
    }

    /// Returns pages to the free list. Freeing a page that is not in use is a bookkeeping bug.
    public func free<S: Sequence>(_ pages: S) where S.Element == PageID {
        state.withLock { s in
            for p in pages {
                precondition(Int(p.raw) < pageCount, "free of \(p) outside the arena")
                precondition(s.inUse[Int(p.raw)], "double free of \(p)")
                s.inUse[Int(p.raw)] = false
                s.free.append(p)
            }
        }
    }
}
