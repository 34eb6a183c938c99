import Synchronization

/// The arena's free list and every page's reference count. Shared by every sequence (and, for
/// prefix reuse, the prefix index), so it is the one piece of state behind a lock; everything else
/// about a sequence is touched by one request at a time.
///
/// A LIFO stack of free page ids: O(1) allocate and release per page, no allocation per call, and
/// recently freed pages (still warm in cache) are handed out first.
///
/// Reference counts let several holders share a page (sequences forked from one another, sequences
/// that adopted a cached prefix, the prefix index itself): `allocate` hands a page out with count 1,
/// `retain` adds a holder, `release` drops one and the page returns to the free list when the last
/// holder lets go. A page counts once against the arena and the quota however many hold it.
/// Releasing a page whose count is already 0 is a bookkeeping bug (a double free would hand the
/// same page to two heads), so it traps, as does retaining a free page.
public final class PageAllocator: Sendable {
    private struct State {
        var free: [PageID]
        /// Holders per page; 0 = on the free list.
        var refs: [UInt32]
        /// Pages with more than one holder, kept current so Stats need not scan the arena.
        var shared: Int
    }

    private let state: Mutex<State>
    public let pageCount: Int
    /// Most pages in use at once (a tenant's quota); `pageCount` when there is none.
    public let limit: Int
    /// Names the quota in errors, e.g. "tenant 'a' quota (quotas.pages)"; nil when there is none.
    private let quotaName: String?

    /// `quota` caps the pages in use below `pageCount` (0 or nil = no cap).
    public init(pageCount: Int, quota: Int? = nil, quotaName: String? = nil) {
        precondition(pageCount >= 0 && pageCount <= Int(UInt32.max))
        self.pageCount = pageCount
        let capped = quota.map { $0 > 0 && $0 < pageCount } ?? false
        limit = capped ? quota! : pageCount
        self.quotaName = capped ? quotaName : nil
        // Reversed so that the first pages handed out are 0, 1, 2, ... (easier to read in tests and dumps).
        let free = (0..<pageCount).reversed().map { PageID(UInt32($0)) }
        state = Mutex(State(free: free, refs: Array(repeating: 0, count: pageCount), shared: 0))
    }

    public var freeCount: Int { state.withLock { $0.free.count } }
    /// Pages with at least one holder; a shared page counts once.
    public var usedCount: Int { pageCount - freeCount }
    /// Pages with more than one holder right now.
    public var sharedCount: Int { state.withLock { $0.shared } }

    /// Holders of `page` (0 = free).
    public func refCount(of page: PageID) -> Int {
        precondition(Int(page.raw) < pageCount, "refCount of \(page) outside the arena")
        return state.withLock { Int($0.refs[Int(page.raw)]) }
    }

    /// Holders of each of `pages`, in order (one lock for all of them).
    public func refCounts<S: Sequence>(of pages: S) -> [Int] where S.Element == PageID {
        state.withLock { s in pages.map { Int(s.refs[Int($0.raw)]) } }
    }

    /// Whether any of `pages` has more than one holder (one lock for all of them).
    public func anyShared<S: Sequence>(_ pages: S) -> Bool where S.Element == PageID {
        state.withLock { s in pages.contains { s.refs[Int($0.raw)] > 1 } }
    }

    /// Takes `count` pages, each with one holder, or none at all when fewer are free (so a failed
    /// append changes nothing).
    public func allocate(_ count: Int) throws(KVDError) -> [PageID] {
        precondition(count >= 0)
        if count == 0 { return [] }
        let limit = self.limit
        let taken: [PageID]? = state.withLock { s in
            guard s.free.count >= count, pageCount - s.free.count <= limit - count else { return nil }
            let pages = Array(s.free.suffix(count).reversed())
            s.free.removeLast(count)
            for p in pages { s.refs[Int(p.raw)] = 1 }
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

    /// Adds one holder to each of `pages` (a page listed twice gets two). Every page must be in use:
    /// retaining a free page would let the free list hand it out while someone still reads it.
    public func retain<S: Sequence>(_ pages: S) where S.Element == PageID {
        state.withLock { s in
            for p in pages {
                let i = Int(p.raw)
                precondition(i < pageCount, "retain of \(p) outside the arena")
                let n = s.refs[i]
                precondition(n > 0, "retain of free \(p)")
                precondition(n < UInt32.max, "reference count of \(p) overflows")
                if n == 1 { s.shared += 1 }
                s.refs[i] = n + 1
            }
        }
    }

    /// Drops one holder of each of `pages`; a page whose last holder lets go returns to the free list.
    /// Returns how many pages did (what the arena actually got back). Releasing a free page traps.
    @discardableResult
    public func release<S: Sequence>(_ pages: S) -> Int where S.Element == PageID {
        state.withLock { s in
            var freed = 0
            for p in pages {
                let i = Int(p.raw)
                precondition(i < pageCount, "release of \(p) outside the arena")
                let n = s.refs[i]
                precondition(n > 0, "double free of \(p)")
                if n == 2 { s.shared -= 1 }
                s.refs[i] = n - 1
                if n == 1 {
                    s.free.append(p)
                    freed += 1
                }
            }
            return freed
        }
    }

    /// Sets every page's holders at once (a restart adopting its segment: counts rebuilt from the
    /// journal, see `DurableState.holders`); pages with none form the free list. Only on an
    /// allocator that has handed out nothing yet.
    public func restore(holders: [Int]) {
        precondition(holders.count == pageCount && holders.allSatisfy { $0 >= 0 && $0 < Int(UInt32.max) })
        state.withLock { s in
            precondition(s.free.count == pageCount, "restore on an allocator in use")
            s.refs = holders.map { UInt32($0) }
            s.free = (0..<pageCount).reversed().filter { holders[$0] == 0 }.map { PageID(UInt32($0)) }
            s.shared = holders.lazy.filter { $0 > 1 }.count
        }
    }

    /// `release`, under the name callers used before pages could be shared: for a page with one
    /// holder it is exactly the old free.
    @discardableResult
    public func free<S: Sequence>(_ pages: S) -> Int where S.Element == PageID { release(pages) }
}
