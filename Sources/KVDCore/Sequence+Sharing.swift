/// Starting a sequence from pages another holder already has: `fork` (share the first tokens of a
/// live sequence) and `adopt` (share a cached prefix found by the prefix index). Both only add
/// holders to full pages; nothing here writes a page that anyone else holds. See docs/PREFIX.md.
extension KVSequence {
    /// A new sequence `newID` holding this one's first `length` tokens: every head shares the full
    /// pages among them (one more holder each) and gets a fresh copy of the partially filled page
    /// that ends them, if any — only full pages are ever shared, so both sequences can keep appending.
    ///
    /// Only for a sequence that was never compacted nor aliased (its pages hold tokens 0, 1, 2, ...
    /// in order, the same in every head) and has no open reservation: otherwise FAILED_PRECONDITION.
    /// All or nothing: when the partial pages cannot be allocated nothing changes (RESOURCE_EXHAUSTED).
    public func fork(length n: Int, newID: SequenceID, allocator: PageAllocator, memory: PageMemory) throws(KVDError) -> KVSequence {
        guard !isReleased else { throw .notFound("fork: \(id) was released") }
        guard !aliases.contains(where: { $0 != nil }) else {
            throw .failedPrecondition("fork: \(id) has aliased layers (KVSharer), which hold no tokens of their own; fork before aliasing")
        }
        guard !everCompacted else {
            throw .failedPrecondition(
                "fork: \(id) was compacted, so its heads no longer hold its first tokens in order; fork before compacting")
        }
        if let reservation {
            throw .failedPrecondition("fork: \(id) has an open \(reservation); commit or abort it before forking")
        }
        guard n >= 0, n <= length else {
            throw .invalidArgument("fork: length \(n) is outside 0...\(length), the tokens \(id) holds")
        }
        let pageTokens = layout.pageTokens
        let (full, partial) = n.quotientAndRemainder(dividingBy: pageTokens)
        // Per head, the first page (block index) the fork needs and the first one the head still
        // holds: a sliding layer (window W) needs blocks from the one holding n - W, and has
        // dropped the blocks below its own cutoff (all of them whole pages at the front).
        let need = heads.indices.map { h in SlidingWindow.cutoff(length: n, window: layout.window(layer: h / layout.kvHeads)) / pageTokens }
        let held = heads.map { (length - $0.count) / pageTokens }
        if let h = heads.indices.first(where: { need[$0] < held[$0] }) {
            let l = h / layout.kvHeads
            throw .failedPrecondition(
                "fork: layer \(l) (sliding window \(layout.window(layer: l))) of \(id) no longer holds positions "
                    + "\(need[h] * pageTokens)..<\(held[h] * pageTokens), which a fork of length \(n) needs; fork at length "
                    + "\(held[h] * pageTokens + layout.window(layer: l)) or more, or fork earlier")
        }
        let fresh = partial > 0 ? try allocator.allocate(heads.count) : []
        allocator.retain(heads.indices.lazy.flatMap { h in self.heads[h].pages[(need[h] - held[h])..<(full - held[h])] })
        var forked: [HeadCache] = []
        forked.reserveCapacity(heads.count)
        for (h, head) in heads.enumerated() {
            // Never compacted: every head holds the tokens from its first held page to `length` in
            // order, log-weight 0.
            precondition(head.count == length - held[h] * pageTokens && !head.hasLogWeights, "\(id) head \(h) is not a plain prefix")
            var copy = HeadCache()
            copy.pages = Array(head.pages[(need[h] - held[h])..<(full - held[h])])
            if partial > 0 {
                memory.copyTokens(from: head.pages[full - held[h]], slot: 0, to: fresh[h], slot: 0, count: partial, layout)
                copy.pages.append(fresh[h])
            }
            let first = need[h] * pageTokens
            copy.extend(first: Int32(first), tokens: n - first)
            forked.append(copy)
        }
        return KVSequence(id: newID, layout: layout, tenant: tenant, heads: forked, length: n)
    }

    /// A new sequence whose heads start with the given full pages (`pages[h]` for head h,
    /// layer-major), one more holder each: `tokens` tokens at positions 0..<tokens. What
    /// CreateSequence with a cached prefix uses. `tokens` must be a whole number of pages and
    /// every head must get `tokens / page_tokens` pages in use (the prefix index's entries are).
    public static func adopt(
        id: SequenceID, layout: ModelLayout, tenant: String, pages: [[PageID]], tokens: Int, allocator: PageAllocator
    ) throws(KVDError) -> KVSequence {
        guard tokens >= 0, tokens <= maxLength, tokens % layout.pageTokens == 0 else {
            throw .invalidArgument(
                "adopt: \(tokens) tokens is not a whole number of \(layout.pageTokens)-token pages within \(maxLength) tokens")
        }
        let perHead = tokens / layout.pageTokens
        guard pages.count == layout.headCount, pages.allSatisfy({ $0.count == perHead }) else {
            throw .invalidArgument(
                "adopt: expected \(layout.headCount) heads of \(perHead) pages each for \(tokens) tokens of model '\(layout.name)'")
        }
        // A sliding layer takes only the pages its window still needs at this length (the ones
        // a sequence that appended these tokens would still hold).
        let skip = (0..<layout.headCount).map { h in
            SlidingWindow.cutoff(length: tokens, window: layout.window(layer: h / layout.kvHeads)) / layout.pageTokens
        }
        allocator.retain(pages.indices.lazy.flatMap { pages[$0].dropFirst(skip[$0]) })
        let heads = pages.indices.map { h in
            var head = HeadCache()
            head.pages = Array(pages[h].dropFirst(skip[h]))
            let first = skip[h] * layout.pageTokens
            head.extend(first: Int32(first), tokens: tokens - first)
            return head
        }
        return KVSequence(id: id, layout: layout, tenant: tenant, heads: heads, length: tokens)
    }
}
