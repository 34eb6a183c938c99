/// The hash chain of one sequence's prompt as its tokens arrive: the hash of every full block so far
/// and the token ids of the partly filled last block (the only ones still needed: a block is hashed
/// once, when its page fills). The server keeps one per sequence whose every append carried token
/// ids and that was never compacted; anything else drops it for good (its pages stop being a
/// prefix in order, or their tokens are unknown). See docs/PREFIX.md.
public struct PrefixTracker: Sendable, Equatable {
    public let pageTokens: Int
    /// Hash of block 0, 1, ...: one per full page.
    public private(set) var hashes: [PrefixHash]
    /// Token ids of the tokens after the last full block (fewer than `pageTokens`).
    public private(set) var pending: [UInt32]

    /// A block that became full: index `block`, its hash and its parent's (`PrefixHash.root` for 0).
    public struct FullBlock: Sendable, Equatable {
        public let block: Int
        public let hash: PrefixHash
        public let parent: PrefixHash
    }

    public init(pageTokens: Int, hashes: [PrefixHash] = [], pending: [UInt32] = []) {
        precondition(pageTokens > 0 && pending.count < pageTokens)
        self.pageTokens = pageTokens
        self.hashes = hashes
        self.pending = pending
    }

    /// Tokens covered: what the sequence's length must be for the tracker to describe it.
    public var tokens: Int { hashes.count * pageTokens + pending.count }

    /// Takes the next tokens' ids; returns the blocks they completed, in order.
    public mutating func add(_ ids: some Collection<UInt32>, hasher: PrefixHasher) -> [FullBlock] {
        var full: [FullBlock] = []
        for id in ids {
            pending.append(id)
            if pending.count == pageTokens {
                let parent = hashes.last ?? .root
                let h = hasher.hash(parent: parent, tokens: pending)
                full.append(FullBlock(block: hashes.count, hash: h, parent: parent))
                hashes.append(h)
                pending.removeAll(keepingCapacity: true)
            }
        }
        return full
    }

    /// The tracker of the first `n` tokens (what a fork of that length continues from), or nil when
    /// the ids of its partial last block are no longer known (they were in a block hashed since).
    public func prefix(_ n: Int) -> PrefixTracker? {
        guard n >= 0, n <= tokens else { return nil }
        let (full, part) = n.quotientAndRemainder(dividingBy: pageTokens)
        if part == 0 { return PrefixTracker(pageTokens: pageTokens, hashes: Array(hashes.prefix(full))) }
        guard full == hashes.count else { return nil }
        return PrefixTracker(pageTokens: pageTokens, hashes: hashes, pending: Array(pending.prefix(part)))
    }
}
