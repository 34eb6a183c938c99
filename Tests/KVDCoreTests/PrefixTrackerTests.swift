import KVDCore
import Testing

/// The per-sequence hash chain: blocks hash when their page fills, whatever the append sizes, and
/// the same as `PrefixHasher.chain` over the whole prompt; prefixes for forks.
@Suite struct PrefixTrackerTests {
    static let hasher = try! PrefixHasher(key: SipKey(k0: 1, k1: 2), model: "m", tenantSalt: Array("t".utf8))
    static let ids: [UInt32] = (0..<23).map { UInt32($0 * 7 + 3) }

    @Test func anyAppendSizesGiveTheWholePromptsChain() {
        let want = Self.hasher.chain(tokens: Self.ids, blockTokens: 4)
        for step in [1, 3, 4, 5, 23] {
            var t = PrefixTracker(pageTokens: 4)
            var full: [PrefixTracker.FullBlock] = []
            var i = 0
            while i < Self.ids.count {
                full += t.add(Self.ids[i..<min(i + step, Self.ids.count)], hasher: Self.hasher)
                i += step
            }
            #expect(t.hashes == want)
            #expect(full.map(\.hash) == want && full.map(\.block) == Array(0..<5))
            #expect(full.map(\.parent) == [PrefixHash.root] + want.dropLast())
            #expect(t.pending == Array(Self.ids[20...]) && t.tokens == 23)
        }
    }

    @Test func prefixKeepsWhatItCanKnow() {
        var t = PrefixTracker(pageTokens: 4)
        _ = t.add(Self.ids, hasher: Self.hasher)
        #expect(t.prefix(0) == PrefixTracker(pageTokens: 4))
        #expect(t.prefix(8) == PrefixTracker(pageTokens: 4, hashes: Array(t.hashes.prefix(2))))
        #expect(t.prefix(22) == PrefixTracker(pageTokens: 4, hashes: t.hashes, pending: Array(Self.ids[20..<22])))
        #expect(t.prefix(23) == t)
        // Block 2's ids were dropped when it was hashed: a fork ending inside it cannot continue the chain.
        #expect(t.prefix(9) == nil)
        #expect(t.prefix(24) == nil && t.prefix(-1) == nil)
        // A continued prefix hashes its next block like the original would have.
        var p = t.prefix(20)!
        let next = p.add(Self.ids[20...] + [9, 9, 9], hasher: Self.hasher)
        #expect(next.map(\.hash) == [Self.hasher.hash(parent: t.hashes[4], tokens: Array(Self.ids[20...]) + [9])])
    }
}
