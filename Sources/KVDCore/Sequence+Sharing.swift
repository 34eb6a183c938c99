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
        let fresh = partial > 0 ? try allocator.allocate(heads.count) : []
        allocator.retain(heads.lazy.flatMap { $0.pages.prefix(full) })
        var forked: [HeadCache] = []
        forked.reserveCapacity(heads.count)
        for (h, head) in heads.enumerated() {
            // Never compacted: every head holds `length` tokens at positions 0..<length, log-weight 0.
            precondition(head.count == length && !head.hasLogWeights, "\(id) head \(h) is not a plain prefix")
            var copy = HeadCache()
            copy.pages = Array(head.pages.prefix(full))
            if partial > 0 {
                memory.copyTokens(from: head.pages[full], slot: 0, to: fresh[h], slot: 0, count: partial, layout)
                copy.pages.append(fresh[h])
            }
            copy.extend(first: 0, tokens: n)
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
        allocator.retain(pages.joined())
        let heads = pages.map { p in
            var head = HeadCache()
            head.pages = p
            head.extend(first: 0, tokens: tokens)
            return head
        }
        return KVSequence(id: id, layout: layout, tenant: tenant, heads: heads, length: tokens)
    }
}
