/// Sliding-window layers (`ModelLayout.layerWindows`): which tokens a layer with window W still
/// needs once the sequence is L tokens long, and dropping the pages below that.
///
/// Why `L - W` is the cutoff: a query at position p attends to keys k with p - W < k <= p
/// (transformers' Gemma-3 sliding mask). Once the sequence holds L tokens, the earliest query any
/// client can still ask about is the last token's, p = L - 1 (its K/V is appended before its
/// attention runs; every later token has p >= L). So every later query needs only k > L - 1 - W,
/// i.e. k >= L - W. A runtime that appends a chunk of tokens and then attends the chunk's earlier
/// queries (prefill) must take those from the chunk itself, not from kvd: by then kvd may have
/// dropped keys only those earlier queries needed. docs/MEMORY.md, "Sliding windows".
public enum SlidingWindow {
    /// First position a layer with `window` (0 = full) still needs at length `length`.
    @inline(__always) public static func cutoff(length: Int, window: Int) -> Int {
        window > 0 && length > window ? length - window : 0
    }

    /// Most pages a head of a layer with `window` > 0 holds between appends: the tokens kept run
    /// from the page holding the cutoff to L - 1, at most W + P - 1 tokens, so ceil(W/P) + 1 pages.
    public static func maxPages(window: Int, pageTokens: Int) -> Int {
        (window + pageTokens - 1) / pageTokens + 1
    }
}

extension HeadCache {
    /// Leading tokens whose original position is below `cutoff` (positions ascend within a head:
    /// appends add larger ones, and compaction keeps sorted indices). O(runs).
    public func tokensBelow(_ cutoff: Int) -> Int {
        var n = 0
        for r in positionRuns {
            let first = Int(r.first), count = Int(r.count)
            if first + count <= cutoff { n += count; continue }
            if first < cutoff { n += cutoff - first }
            break
        }
        return n
    }

    /// Drops the leading pages all of whose tokens sit below `cutoff` and returns them (the caller
    /// releases them): whole pages only, nothing copied, so token t stays in `pages[t / P]`.
    public mutating func dropPages(below cutoff: Int, pageTokens: Int) -> ArraySlice<PageID> {
        guard cutoff > 0 else { return [] }
        let k = tokensBelow(cutoff) / pageTokens
        guard k > 0 else { return [] }
        let dropped = pages[..<k]
        pages.removeFirst(k)
        dropFirstTokens(k * pageTokens)
        return dropped
    }
}

extension KVSequence {
    /// What one window pass dropped.
    public struct WindowFree: Sendable, Equatable {
        /// Pages the sequence's heads let go of (each one holder less).
        public var released: Int = 0
        /// Of those, pages that went back to the free list (held by nobody else: not a fork, not
        /// the prefix index).
        public var freed: Int = 0
        public init(released: Int = 0, freed: Int = 0) {
            self.released = released
            self.freed = freed
        }
    }
}

extension SequenceImage {
    /// `KVSequence.freeOutOfWindow` on the durable bookkeeping: a restart replaying an append
    /// drops the same pages the live sequence dropped after it.
    public mutating func freeOutOfWindow(_ layout: ModelLayout) {
        guard layout.hasSlidingLayers else { return }
        for h in heads.indices {
            let w = layout.window(layer: h / layout.kvHeads)
            _ = heads[h].dropPages(below: SlidingWindow.cutoff(length: length, window: w), pageTokens: layout.pageTokens)
        }
    }
}
