import CKVDKernels
import Dispatch
import Foundation

/// One sequence's bookkeeping: per (layer, head) page lists, counts, positions and log-weights, plus
/// an optional open reservation. It moves bytes only inside its own pages.
///
/// Pages may be shared (reference counts in `PageAllocator`) with sequences forked from this one or
/// from the same cached prefix, and with the prefix index. Two invariants keep sharing invisible:
/// only full pages are ever shared, and nothing a sequence does writes into a shared page — appends
/// write only into the unshared partial last page and new pages, and compaction copies a head that
/// would write into a shared page (copy-on-write). Dropping a page is always a `release` (one holder
/// less), never a free. See docs/PREFIX.md.
///
/// Not thread-safe by design: the server runs every request for a sequence on that sequence's serial
/// queue, so one request changes it at a time while other sequences proceed in parallel. The shared
/// `PageAllocator` has its own lock. Not Sendable, so the compiler keeps it where it was made; the
/// server reaches it only through `SequenceEntry.onQueue`, which asserts the queue.
public final class KVSequence {
    public let id: SequenceID
    public let layout: ModelLayout
    public let tenant: String
    /// Tokens ever appended; compaction does not lower it. The next token's original position.
    public private(set) var length: Int = 0
    /// Bumped by every change that moves or frees tokens; page references name it.
    public private(set) var generation: UInt64 = 1
    public private(set) var heads: [HeadCache]
    public private(set) var reservation: Reservation?
    /// Set once released; requests queued behind the release then see NOT_FOUND.
    public private(set) var isReleased = false
    /// Per layer: the layer whose cache it reads (KVSharer), or nil when it owns its own. Always an
    /// earlier layer that owns its cache (chains are resolved when applied).
    public private(set) var aliases: [Int?]
    /// Set by the first compaction or layer alias that changed anything: from then on a head's pages
    /// no longer hold tokens 0, 1, 2, ... in order, so they are no prefix to index or fork.
    public private(set) var everCompacted = false

    /// An open zero-copy reservation: the tokens still reserved (they start at each head's count)
    /// and, per head, the pages taken for them that the head does not hold yet. A commit with
    /// `keepReserved` moves the pages its tokens reach into the heads and leaves the rest here.
    public struct Reservation: Sendable {
        public let id: ReservationID
        public let tokens: Int
        public let newPages: [[PageID]]
    }

    public init(id: SequenceID, layout: ModelLayout, tenant: String) {
        self.id = id
        self.layout = layout
        self.tenant = tenant
        self.heads = Array(repeating: HeadCache(), count: layout.headCount)
        self.aliases = Array(repeating: nil, count: layout.layers)
    }

    /// A sequence that starts with `heads` (already holding their pages) and `length` tokens: what
    /// `fork` and `adopt` build (Sequence+Sharing.swift), and a restart rebuilds from the journal
    /// with its generation, compaction mark and aliases (Durability/Sequence+Image.swift).
    init(id: SequenceID, layout: ModelLayout, tenant: String, heads: [HeadCache], length: Int,
         generation: UInt64 = 1, everCompacted: Bool = false, aliases: [Int?]? = nil) {
        precondition(heads.count == layout.headCount && length >= 0 && length <= Self.maxLength)
        self.id = id
        self.layout = layout
        self.tenant = tenant
        self.heads = heads
        self.length = length
        self.generation = generation
        self.everCompacted = everCompacted
        self.aliases = aliases ?? Array(repeating: nil, count: layout.layers)
    }

    /// Whether head index `h` (layer-major) belongs to an aliased layer, which stores nothing.
    @inline(__always) public func isAliased(head h: Int) -> Bool { aliases[h / layout.kvHeads] != nil }

    /// The layer whose cache `layer` reads.
    public func owner(of layer: Int) -> Int { aliases[layer] ?? layer }

    /// Pages held, including an open reservation's.
    public var pageCount: Int {
        heads.reduce(0) { $0 + $1.pages.count } + (reservation?.newPages.reduce(0) { $0 + $1.count } ?? 0)
    }

    public var tokensHeld: Int { heads.reduce(0) { $0 + $1.count } }

    /// Most tokens a sequence can ever hold: original positions are int32, so the last token's
    /// (length - 1) must be one. `server.max_sequence_tokens` may set a lower limit (the handlers check it).
    public static let maxLength = Int(Int32.max)

    /// Refuses `tokens` more tokens when the length would pass `maxLength`; changes nothing.
    public func requireRoom(for tokens: Int, _ action: String) throws(KVDError) {
        let (end, overflow) = length.addingReportingOverflow(tokens)
        guard tokens >= 0, !overflow, end <= Self.maxLength else {
            throw .invalidArgument(
                "\(action): \(tokens) more tokens would take \(id) (length \(length)) past \(Self.maxLength) tokens, "
                    + "the most int32 positions allow; start a new sequence")
        }
    }

    private func requireNoReservation(_ action: String) throws(KVDError) {
        if let reservation {
            throw .failedPrecondition(
                "\(id) has an open \(reservation) of \(reservation.tokens) tokens; commit or abort it before \(action)")
        }
    }

    /// Pages each head needs beyond what it holds to take `tokens` more.
    private func extraPages(_ tokens: Int) -> [Int] {
        heads.indices.map { h in
            isAliased(head: h) ? 0 : HeadCache.pagesNeeded(heads[h].count + tokens, pageTokens: layout.pageTokens) - heads[h].pages.count
        }
    }

    /// Pages an Append or Reserve of `tokens` more tokens takes from the allocator.
    public func pagesNeeded(forTokens tokens: Int) -> Int { extraPages(tokens).reduce(0, +) }

    /// Allocates `extraPages` for every head at once, or nothing.
    private func allocateExtra(_ tokens: Int, _ allocator: PageAllocator) throws(KVDError) -> [[PageID]] {
        let extra = extraPages(tokens)
        var pages = try allocator.allocate(extra.reduce(0, +))[...]
        return extra.map { n in
            defer { pages = pages.dropFirst(n) }
            return Array(pages.prefix(n))
        }
    }

    /// Traps when a head's partially filled last page — the one an append or reservation writes
    /// into — is shared: sharing only full pages is what makes writing there safe, so a shared one
    /// means the bookkeeping is broken and another holder's bytes would change.
    private func requireUnsharedTail(_ allocator: PageAllocator) {
        let pageTokens = layout.pageTokens
        let tails = heads.indices.lazy.filter { h in !self.isAliased(head: h) && self.heads[h].count % pageTokens != 0 }
            .map { h in self.heads[h].pages[self.heads[h].pages.count - 1] }
        precondition(!allocator.anyShared(tails), "\(id): a partially filled page is shared")
    }

    private func extend(tokens: Int) {
        // `requireRoom` ran before anything changed, so every new position is an Int32.
        guard let first = Int32(exactly: length), length + tokens <= Self.maxLength else {
            preconditionFailure("\(id): length \(length) + \(tokens) tokens passes int32 positions")
        }
        for h in heads.indices where !isAliased(head: h) {
            heads[h].extend(first: first, tokens: tokens)
        }
        length += tokens
    }

    // MARK: inline append

    /// Appends `tokens` tokens whose K and V are `[layers, kv_heads, tokens, head_dim]` blocks in the
    /// model's dtype. All or nothing: when the arena is short of pages nothing changes.
    /// Returns the first appended token's position.
    @discardableResult
    public func append(
        keys: UnsafeRawBufferPointer, values: UnsafeRawBufferPointer, tokens: Int,
        allocator: PageAllocator, memory: PageMemory
    ) throws(KVDError) -> Int {
        precondition(tokens > 0)
        let headBlock = tokens * layout.tokenBytes
        precondition(keys.count == layout.headCount * headBlock && values.count == keys.count)
        try requireNoReservation("appending")
        try requireRoom(for: tokens, "append")
        requireUnsharedTail(allocator)
        let newPages = try allocateExtra(tokens, allocator)
        // Aliased layers store nothing: their part of the tensors is ignored.
        for h in heads.indices where !isAliased(head: h) {
            heads[h].pages.append(contentsOf: newPages[h])
            let runs = HeadCache.runs(pages: heads[h].pages, start: heads[h].count, count: tokens, pageTokens: layout.pageTokens)
            var source = h * headBlock
            for run in runs {
                let n = run.count * layout.tokenBytes
                memory.key(run.page, slot: run.slot, layout).copyMemory(from: keys.baseAddress! + source, byteCount: n)
                memory.value(run.page, slot: run.slot, layout).copyMemory(from: values.baseAddress! + source, byteCount: n)
                source += n
            }
        }
        let first = length
        extend(tokens: tokens)
        return first
    }

    // MARK: zero-copy reserve and commit

    /// Allocates room for `tokens` more tokens in every head and returns, per head, the runs where
    /// the client writes them. The tokens stay invisible until `commit`.
    public func reserve(tokens: Int, id rid: ReservationID, allocator: PageAllocator) throws(KVDError) -> [[TokenRun]] {
        precondition(tokens > 0)
        try requireNoReservation("reserving again")
        try requireRoom(for: tokens, "reserve")
        requireUnsharedTail(allocator)
        let newPages = try allocateExtra(tokens, allocator)
        reservation = Reservation(id: rid, tokens: tokens, newPages: newPages)
        return heads.indices.map { h in
            isAliased(head: h) ? [] : HeadCache.runs(pages: heads[h].pages + newPages[h], start: heads[h].count, count: tokens, pageTokens: layout.pageTokens)
        }
    }

    private func openReservation(_ rid: ReservationID) throws(KVDError) -> Reservation {
        guard let r = reservation, r.id == rid else {
            throw .notFound("\(id) has no open \(rid)\(reservation.map { "; the open one is \($0.id)" } ?? ""); reserve first")
        }
        return r
    }

    /// Makes the first `tokens` reserved tokens not yet committed part of the sequence, in every
    /// head at once. Without `keepReserved` the rest of the reservation is freed and it closes;
    /// with it the rest stays reserved under the same id in the same slots (the reservation closes
    /// once its last token is committed). All or nothing: a refused commit changes nothing.
    /// Returns the first committed token's position.
    @discardableResult
    public func commit(_ rid: ReservationID, tokens: Int, keepReserved: Bool = false, allocator: PageAllocator) throws(KVDError) -> Int {
        let r = try openReservation(rid)
        guard tokens >= 1, tokens <= r.tokens else {
            if tokens < 1 { throw .invalidArgument("commit: num_tokens must be at least 1 (use abort to drop the reservation)") }
            throw .failedPrecondition("commit: num_tokens \(tokens) is more than the \(r.tokens) still reserved in \(rid)")
        }
        try requireRoom(for: tokens, "commit")
        // Checks are done: from here on nothing can fail, so every head takes its tokens.
        var rest: [[PageID]] = []
        rest.reserveCapacity(keepReserved ? heads.count : 0)
        for h in heads.indices {
            guard !isAliased(head: h) else {
                if keepReserved { rest.append([]) }
                continue
            }
            let keep = HeadCache.pagesNeeded(heads[h].count + tokens, pageTokens: layout.pageTokens) - heads[h].pages.count
            heads[h].pages.append(contentsOf: r.newPages[h].prefix(keep))
            if keepReserved {
                rest.append(Array(r.newPages[h].dropFirst(keep)))
            } else {
                allocator.release(r.newPages[h].dropFirst(keep))
            }
        }
        let remaining = r.tokens - tokens
        reservation = keepReserved && remaining > 0 ? Reservation(id: rid, tokens: remaining, newPages: rest) : nil
        let first = length
        extend(tokens: tokens)
        return first
    }

    /// Drops what is still reserved of an open reservation; tokens committed from it earlier stay.
    public func abort(_ rid: ReservationID, allocator: PageAllocator) throws(KVDError) {
        let r = try openReservation(rid)
        for pages in r.newPages { allocator.release(pages) }
        reservation = nil
    }

    // MARK: compaction

    /// What a compaction changed.
    public struct CompactionOutcome: Sendable {
        public let before: [Int]
        public let kept: [Int]
        /// Pages the arena got back (a released page still held by another sequence or the prefix
        /// index does not count).
        public let pagesFreed: Int
        /// Fresh pages taken to copy heads that held shared pages; the arena's net gain is
        /// `pagesFreed - pagesAllocated`, which may be negative.
        public let pagesAllocated: Int
        /// With `holdReleased`: the old pages the compaction dropped but has not released yet.
        public let held: [PageID]
        public init(before: [Int], kept: [Int], pagesFreed: Int, pagesAllocated: Int = 0, held: [PageID] = []) {
            self.before = before
            self.kept = kept
            self.pagesFreed = pagesFreed
            self.pagesAllocated = pagesAllocated
            self.held = held
        }
    }

    /// How one head is compacted; decided for every head before anything changes, so that the
    /// fresh pages of all copied heads are taken in one all-or-nothing allocation.
    private enum HeadCompaction {
        /// Keeps every token in place and no new log-weights: nothing to do.
        case unchanged
        /// Packs the kept tokens to the front of the head's own pages.
        case inPlace([PackMove])
        /// Copies the kept tokens into fresh pages: packing in place would write a shared page.
        case copy
    }

    private func headCompaction(_ h: Int, plan: CompactionPlan, allocator: PageAllocator, copyOnly: Bool = false) -> HeadCompaction {
        let kept = plan.kept[h]
        let pageTokens = layout.pageTokens
        // A valid plan's indices are sorted and unique, so keeping as many as the head holds
        // keeps every token in place (KVSharer's plans, budgets above the length): skip the
        // O(tokens) rebuild unless new log-weights arrive.
        if kept.count == heads[h].count, plan.logWeights == nil { return .unchanged }
        if copyOnly {
            // Nothing written where the old state can see it: the old pages stay intact until the
            // caller has recorded the new state (a crash in between leaves the old one whole).
            return kept.count == heads[h].count ? .inPlace([]) : .copy
        }
        let moves = CompactionPlan.packMoves(kept: kept, pageTokens: pageTokens)
        let pages = heads[h].pages
        // Pages packing writes, plus the new last page when it ends partly filled: later appends
        // write into it, and only full pages may be shared. Pages only read or dropped may stay shared.
        var written = moves.map { pages[$0.destination / pageTokens] }
        if kept.count % pageTokens != 0 { written.append(pages[kept.count / pageTokens]) }
        return allocator.anyShared(written) ? .copy : .inPlace(moves)
    }

    /// Validates `plan`, packs the kept tokens of each head to the front of its pages, releases
    /// emptied pages, rewrites positions and log-weights, and bumps the generation if anything
    /// changed. A head whose packing would write into a shared page gets fresh pages for its kept
    /// tokens instead (copy-on-write) and releases all its old ones; heads with no shared page pack
    /// in place at no extra cost. All or nothing: if the fresh pages cannot be allocated, nothing
    /// changes (RESOURCE_EXHAUSTED).
    ///
    /// `holdReleased` (crash safety): no page the current state uses is written — every head that
    /// drops tokens is copied to fresh pages — and the dropped pages are returned in
    /// `CompactionOutcome.held` instead of released, for the caller to release once it has
    /// recorded the new state.
    ///
    /// `threads` > 1 packs heads in parallel (heads touch disjoint pages); the bookkeeping stays
    /// on the calling thread.
    public func compact(
        plan: CompactionPlan, method: String, allocator: PageAllocator, memory: PageMemory, holdReleased: Bool = false,
        threads: Int = 1
    ) throws(KVDError) -> CompactionOutcome {
        try requireNoReservation("compacting")
        let before = heads.map(\.count)
        try plan.validate(headCounts: before, layout: layout, method: method)
        let pageTokens = layout.pageTokens
        let work = heads.indices.map { headCompaction($0, plan: plan, allocator: allocator, copyOnly: holdReleased) }
        let copyPages = heads.indices.reduce(0) { n, h in
            if case .copy = work[h] { return n + HeadCache.pagesNeeded(plan.kept[h].count, pageTokens: pageTokens) }
            return n
        }
        var fresh = try allocator.allocate(copyPages)[...]
        var freed = 0
        var held: [PageID] = []
        func drop(_ pages: ArraySlice<PageID>) {
            if holdReleased { held += pages } else { freed += allocator.release(pages) }
        }
        // First every head's copies (which pages, which moves), then the bytes, then the bookkeeping.
        var copies: [HeadCopy] = []
        var newPageLists = [[PageID]](repeating: [], count: heads.count)
        for h in heads.indices {
            let kept = plan.kept[h]
            let pages = heads[h].pages
            let keepPages = HeadCache.pagesNeeded(kept.count, pageTokens: pageTokens)
            switch work[h] {
            case .unchanged:
                continue
            case .inPlace(let moves):
                if !moves.isEmpty { copies.append(HeadCopy(from: pages, to: pages, moves: moves)) }
                newPageLists[h] = Array(pages.prefix(keepPages))
            case .copy:
                let newPages = Array(fresh.prefix(keepPages))
                fresh = fresh.dropFirst(keepPages)
                copies.append(HeadCopy(from: pages, to: newPages, moves: CompactionPlan.copyMoves(kept: kept, pageTokens: pageTokens)))
                newPageLists[h] = newPages
            }
        }
        Self.run(copies, memory: memory, layout: layout, threads: threads)
        var changed = false
        for h in heads.indices {
            let kept = plan.kept[h]
            let pages = heads[h].pages
            let keepPages = HeadCache.pagesNeeded(kept.count, pageTokens: pageTokens)
            switch work[h] {
            case .unchanged:
                continue
            case .inPlace:
                if keepPages < pages.count { drop(pages[keepPages...]) }
            case .copy:
                drop(pages[...])
            }
            let newPages = newPageLists[h]
            let head = heads[h]
            var next = HeadCache()
            next.pages = newPages
            next.count = kept.count
            // Read off the runs for the kept tokens only: a head of 2^24 tokens keeping a few must
            // not build its whole position (or zero log-weight) array.
            let weights = plan.logWeights?[h] ?? head.storedLogWeights.map { old in kept.map { old[Int($0)] } }
            next.set(positions: head.positions(at: kept), logWeights: weights)
            if next != head { changed = true }
            heads[h] = next
        }
        if changed {
            generation += 1
            everCompacted = true
        }
        return CompactionOutcome(before: before, kept: heads.map(\.count), pagesFreed: freed, pagesAllocated: copyPages, held: held)
    }

    /// The memmoves of one head's packing: `moves` from `from`'s pages to `to`'s (the same list
    /// when packing in place, where moves must run in order).
    private struct HeadCopy: Sendable {
        let from: [PageID]
        let to: [PageID]
        let moves: [PackMove]
    }

    /// Runs the heads' copies, on `threads` threads when there are several heads: each head's moves
    /// stay in order on one thread, and no two heads share a page they write (a page shared with
    /// another holder is only read: heads that would write one are copied to fresh pages).
    private static func run(_ copies: [HeadCopy], memory: PageMemory, layout: ModelLayout, threads: Int) {
        let pageTokens = layout.pageTokens
        let bytes = 2 * layout.tokenBytes  // K and V of one token
        @Sendable func prefetch(_ c: HeadCopy, _ m: PackMove) {
            let (page, slot) = (c.from[m.source / pageTokens], m.source % pageTokens)
            kvd_prefetch(memory.key(page, slot: slot, layout), m.count * layout.tokenBytes)
            kvd_prefetch(memory.value(page, slot: slot, layout), m.count * layout.tokenBytes)
        }
        @Sendable func copy(_ c: HeadCopy) {
            // The sources are pieces of 256 B to 4 KiB in pages far apart, which hardware prefetchers
            // do not follow: each memmove waited on memory. Ask for the next ~8 KiB ahead.
            var ahead = 0, aheadBytes = 0
            for m in c.moves {
                while ahead < c.moves.count, aheadBytes < 8192 {
                    prefetch(c, c.moves[ahead])
                    aheadBytes += c.moves[ahead].count * bytes
                    ahead += 1
                }
                memory.copyTokens(
                    from: c.from[m.source / pageTokens], slot: m.source % pageTokens,
                    to: c.to[m.destination / pageTokens], slot: m.destination % pageTokens, count: m.count, layout)
                aheadBytes -= m.count * bytes
            }
        }
        // Threads only pay when there is much to move: waking them costs more than a StreamingLLM
        // packing (~2 MB) takes.
        let moved = copies.reduce(0) { sum, c in c.moves.reduce(sum) { $0 + $1.count } } * bytes
        let n = moved < 8 << 20 ? 1 : min(max(threads, 1), copies.count)
        if n <= 1 {
            for c in copies { copy(c) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: n) { t in
            for i in stride(from: t, to: copies.count, by: n) { copy(copies[i]) }
        }
    }

    /// What applying `plan` (already validated) would do to the pages: the pages heads would
    /// release (each loses one holder; a shared one stays in the arena) and the fresh pages heads
    /// holding shared pages would take to copy their kept tokens. The arena's net gain is the
    /// released pages nobody else holds minus `fresh`, which may be negative: compacting a
    /// sequence whose pages a fork shares costs memory.
    /// `copyOnly`: as `compact`'s `holdReleased` does it (every changed head copied).
    public func compactionPageChanges(plan: CompactionPlan, allocator: PageAllocator, copyOnly: Bool = false) -> (released: [PageID], fresh: Int) {
        let pageTokens = layout.pageTokens
        var released: [PageID] = []
        var fresh = 0
        for h in heads.indices where h < plan.kept.count {
            let pages = heads[h].pages
            let keepPages = HeadCache.pagesNeeded(plan.kept[h].count, pageTokens: pageTokens)
            switch headCompaction(h, plan: plan, allocator: allocator, copyOnly: copyOnly) {
            case .unchanged:
                continue
            case .inPlace:
                released += pages.dropFirst(keepPages)
            case .copy:
                released += pages
                fresh += keepPages
            }
        }
        return (released, fresh)
    }

    // MARK: layer aliases (KVSharer)

    /// Makes each `layer` of `map` read `owner`'s cache and releases its pages. Rules: layers in range,
    /// no self-alias, the owner is an earlier layer (a runtime computes layers in order, so a later
    /// layer's cache does not exist yet when an earlier one attends), and chains are resolved
    /// (i → j → k becomes i → k). All or nothing. Returns the pages the arena got back (pages still
    /// held elsewhere, e.g. shared with a fork, are released but not freed).
    public func applyAliases(_ map: [Int: Int], allocator: PageAllocator) throws(KVDError) -> Int {
        allocator.release(try applyAliasesHolding(map))
    }

    /// `applyAliases`, returning the dropped pages instead of releasing them (as `compact`'s
    /// `holdReleased`): the caller releases them once it has recorded the new state.
    public func applyAliasesHolding(_ map: [Int: Int]) throws(KVDError) -> [PageID] {
        let resolved = try resolveAliases(map)
        var held: [PageID] = []
        for l in resolved.indices where resolved[l] != nil && aliases[l] == nil {
            for h in (l * layout.kvHeads)..<((l + 1) * layout.kvHeads) {
                held += heads[h].pages
                heads[h] = HeadCache()
            }
        }
        if resolved != aliases {
            generation += 1
            everCompacted = true
        }
        aliases = resolved
        return held
    }

    /// The per-layer owners after applying `map`, or the error `applyAliases` would throw; changes nothing.
    public func resolveAliases(_ map: [Int: Int]) throws(KVDError) -> [Int?] {
        try requireNoReservation("aliasing layers")
        var resolved = aliases
        for (layer, owner) in map.sorted(by: { $0.key < $1.key }) {
            guard (0..<layout.layers).contains(layer), (0..<layout.layers).contains(owner) else {
                throw .invalidArgument("alias \(layer) → \(owner) is outside layers 0..<\(layout.layers) of model '\(layout.name)'")
            }
            guard layer != owner else { throw .invalidArgument("alias \(layer) → \(owner): a layer cannot alias itself") }
            guard owner < layer else {
                throw .invalidArgument("alias \(layer) → \(owner): a layer may only alias an earlier layer (layers are computed in order)")
            }
            // A layer reads its owner's tokens as they are: a full layer cannot read a sliding
            // layer's (it dropped what the full layer attends to), and a sliding layer aliasing a
            // full one would keep tokens its window never needs, or another window's set.
            guard layout.window(layer: layer) == layout.window(layer: owner) else {
                throw .invalidArgument(
                    "alias \(layer) → \(owner): layer \(layer) has attention window \(layout.window(layer: layer)) and layer \(owner) "
                        + "\(layout.window(layer: owner)) (0 = full); only layers with the same window may share a cache")
            }
            guard resolved[layer] == nil || resolved[layer] == (resolved[owner] ?? owner) else {
                throw .invalidArgument("alias \(layer) → \(owner): layer \(layer) already aliases \(resolved[layer]!)")
            }
            resolved[layer] = resolved[owner] ?? owner
        }
        // Layers aliased to a layer that became aliased itself follow it to its owner.
        for l in resolved.indices { if let o = resolved[l], let oo = resolved[o] { resolved[l] = oo } }
        return resolved
    }

    // MARK: sliding windows

    /// Drops, in every head of a sliding layer, the pages whose tokens all fell out of the layer's
    /// window at the current length (SlidingWindow.swift says why `length - W` is the cutoff),
    /// releasing them: a page shared with a fork or the prefix index loses one holder and stays
    /// with them. Whole pages only, nothing copied. Does not bump the generation: which positions
    /// a sliding layer holds follows from the length, so clients can compute it. An open
    /// reservation is untouched (its tokens start at the heads' counts, above the cutoff).
    @discardableResult
    public func freeOutOfWindow(allocator: PageAllocator) -> WindowFree {
        var out = WindowFree()
        guard layout.hasSlidingLayers, !isReleased else { return out }
        for h in heads.indices where !isAliased(head: h) {
            let w = layout.window(layer: h / layout.kvHeads)
            guard w > 0 else { continue }
            let dropped = heads[h].dropPages(below: SlidingWindow.cutoff(length: length, window: w), pageTokens: layout.pageTokens)
            guard !dropped.isEmpty else { continue }
            out.released += dropped.count
            out.freed += allocator.release(dropped)
        }
        return out
    }

    // MARK: release

    /// Releases every page, including an open reservation's. Returns the pages the arena got back:
    /// pages shared with another sequence or the prefix index stay with them.
    @discardableResult
    public func release(allocator: PageAllocator) -> Int {
        var n = 0
        for h in heads { n += allocator.release(h.pages) }
        if let r = reservation { for pages in r.newPages { n += allocator.release(pages) } }
        heads = Array(repeating: HeadCache(), count: layout.headCount)
        reservation = nil
        isReleased = true
        generation += 1
        return n
    }
}
