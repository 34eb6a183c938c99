import KVDCore
import Testing

/// The remote tier's sequence format: a captured sequence comes back bit-exact (K, V, positions,
/// log-weights, aliases, generation) in fresh pages; a cut, corrupted or foreign blob is an error
/// naming why, never a trap; a restore that does not fit changes nothing.
@Suite struct SequenceBlobTests {
    typealias F = SharingFixture
    let heads = SharingFixture.layout.headCount

    /// A sequence with everything a blob carries: 11 tokens, compacted with log-weights on every
    /// head (positions with gaps), then layer 1 aliased to layer 0.
    func rich(_ f: F) throws -> (KVSequence, [[UInt32]]) {
        let s = KVSequence(id: SequenceID(5), layout: F.layout, tenant: "t")
        try f.append(s, 11)
        let kept: [Int32] = [0, 1, 4, 7, 8, 10]
        let weights = (0..<heads).map { h in kept.map { Float($0) * 0.25 - Float(h) } }
        _ = try s.compact(plan: CompactionPlan(kept: Array(repeating: kept, count: heads), logWeights: weights),
                          method: "t", allocator: f.allocator, memory: f.memory)
        _ = try s.applyAliases([1: 0], allocator: f.allocator)
        return (s, f.allTags(s))
    }

    @Test func aCapturedSequenceRestoresBitExactInFreshPages() throws {
        let f = F(pages: 128)
        let (s, tags) = try rich(f)
        let bytes = SequenceBlob(capturing: s, memory: f.memory).encoded()
        // What an offload ships (straight from the pages) is the same bytes.
        #expect(SequenceBlob.encode(capturing: s, memory: f.memory) == bytes)
        let blob = try SequenceBlob.decode(bytes, expected: F.layout)
        let used = f.allocator.usedCount
        let r = try blob.restore(id: SequenceID(9), tenant: "t", allocator: f.allocator, memory: f.memory)
        #expect(r.id == SequenceID(9) && r.length == s.length && r.generation == s.generation && r.everCompacted)
        #expect(r.aliases == s.aliases)
        #expect(f.allTags(r) == tags)
        for h in 0..<heads {
            #expect(r.heads[h].positions == s.heads[h].positions)
            #expect(r.heads[h].logWeights == s.heads[h].logWeights)
            #expect(Set(r.heads[h].pages).isDisjoint(with: Set(s.heads[h].pages)))
        }
        #expect(f.allocator.usedCount - used == r.pageCount)
        // Captured again from its new pages, it is the same blob (but for the id).
        let again = try SequenceBlob.decode(SequenceBlob(capturing: r, memory: f.memory).encoded(), expected: F.layout)
        #expect(again.keys == blob.keys && again.values == blob.values && again.image.heads == blob.image.heads)
        #expect(again.image.id == 9 && blob.image.id == 5)
    }

    @Test func cutCorruptAndForeignBlobsAreErrors() throws {
        let f = F(pages: 128)
        let (s, _) = try rich(f)
        let bytes = SequenceBlob(capturing: s, memory: f.memory).encoded()
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            #expect(throws: DurableFormatError.self) { try SequenceBlob.decode(Array(bytes.prefix(cut)), expected: F.layout) }
        }
        var rng = SplitMix64(seed: 3)
        for _ in 0..<300 {
            var b = bytes
            b[Int(rng.next() % UInt64(b.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            #expect(throws: DurableFormatError.self) { try SequenceBlob.decode(b, expected: F.layout) }
        }
        var payloadFlip = bytes
        payloadFlip[bytes.count - 1] ^= 0x40
        let corrupted = #expect(throws: DurableFormatError.self) { try SequenceBlob.decode(payloadFlip, expected: F.layout) }
        #expect(corrupted?.message.contains("checksum") == true)
        let other = ModelLayout(name: "t", layers: 2, kvHeads: 2, qHeads: 4, headDim: 4, dtype: .f32, pageTokens: 3, defaultMethod: "x")
        let foreign = #expect(throws: DurableFormatError.self) { try SequenceBlob.decode(bytes, expected: other) }
        #expect(foreign?.message.contains("written for model 't'") == true)
    }

    /// Encoding into a used buffer (a shipped blob's) gives the same bytes as into a fresh one, and
    /// keeps its capacity.
    @Test func encodingIntoAUsedBufferGivesTheSameBytes() throws {
        let f = F(pages: 128)
        let (s, _) = try rich(f)
        let fresh = SequenceBlob.encode(capturing: s, memory: f.memory)
        var used = [UInt8](repeating: 0xAB, count: 3 * fresh.count)
        used.reserveCapacity(4 * fresh.count)
        let capacity = used.capacity
        let again = SequenceBlob.encode(capturing: s, memory: f.memory, reusing: used)
        used = []  // the only reference left is the result's
        #expect(again == fresh)
        #expect(again.capacity == capacity)
    }

    // MARK: - Restored while it arrives

    func arrival(_ f: F) -> SequenceBlob.Arrival {
        SequenceBlob.Arrival(layouts: { $0 == F.layout.name ? F.layout : nil },
                             allocate: { (n: Int) throws(KVDError) -> [PageID] in try f.allocator.allocate(n) },
                             release: { _ = f.allocator.release($0) }, memory: f.memory)
    }

    /// Starts `a` on a value of `bytes.count` bytes and hands it `bytes[..<end]` in reads of the
    /// given sizes (cycled).
    func feed(_ a: SequenceBlob.Arrival, _ bytes: [UInt8], _ sizes: [Int], to end: Int? = nil, length: Int? = nil) {
        a.begin(length: length ?? bytes.count)
        var at = 0
        var i = 0
        while at < (end ?? bytes.count) {
            let stop = min(end ?? bytes.count, at + sizes[i % sizes.count])
            bytes[at..<stop].withUnsafeBytes { a.arrive($0) }
            at = stop
            i += 1
        }
    }

    /// Whatever the pieces (one byte, inside and across the header, the meta, a token, a page), the
    /// sequence restored while arriving is the one captured, in exactly the pages it counts.
    @Test func restoredWhileArrivingIsBitExact() throws {
        let f = F(pages: 128)
        let (s, tags) = try rich(f)
        let bytes = SequenceBlob.encode(capturing: s, memory: f.memory)
        for sizes in [[1], [7, 31, 2], [32], [33, 100], [bytes.count]] {
            let used = f.allocator.usedCount
            let a = arrival(f)
            feed(a, bytes, sizes)
            let r = try a.finish(id: SequenceID(5), tenant: "t").get()
            #expect(f.allTags(r) == tags, "pieces \(sizes)")
            #expect(r.aliases == s.aliases && r.length == s.length && r.generation == s.generation)
            for h in 0..<heads {
                #expect(r.heads[h].positions == s.heads[h].positions && r.heads[h].logWeights == s.heads[h].logWeights)
            }
            #expect(f.allocator.usedCount - used == r.pageCount)
            _ = r.release(allocator: f.allocator)
        }
    }

    /// A corrupted byte anywhere, a cut, another id, or no room: `finish` (or `take`) fails with
    /// the reason and every page it took is back; a start-over (a redirected GET) gives back the
    /// first attempt's pages and restores from the second.
    @Test func anArrivalThatFailsGivesEveryPageBack() throws {
        let f = F(pages: 128)
        let (s, _) = try rich(f)
        let bytes = SequenceBlob.encode(capturing: s, memory: f.memory)
        let free = f.allocator.freeCount
        func outcome(_ b: [UInt8], id: UInt64 = 5, length: Int? = nil) -> SequenceBlob.Arrival.Failure? {
            let a = arrival(f)
            feed(a, b, [13], length: length)
            switch a.finish(id: SequenceID(id), tenant: "t") {
            case .success(let r):
                _ = r.release(allocator: f.allocator)
                return nil
            case .failure(let e): return e
            }
        }
        func message(_ e: SequenceBlob.Arrival.Failure?) -> String {
            if case .unusable(let d) = e { return d.message }
            return "not unusable: \(String(describing: e))"
        }
        var rng = SplitMix64(seed: 11)
        for _ in 0..<200 {
            var b = bytes
            b[Int(rng.next() % UInt64(b.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            #expect(outcome(b) != nil)
            #expect(f.allocator.freeCount == free)
        }
        var tail = bytes
        tail[tail.count - 1] ^= 0x40
        #expect(message(outcome(tail)).contains("checksum"))
        #expect(message(outcome(Array(bytes.dropLast(5)), length: bytes.count)).contains("cut short"))
        #expect(message(outcome(bytes, id: 6)).contains("holds sequence 5"))
        #expect(f.allocator.freeCount == free)
        // No room: nothing taken, nothing left behind.
        let hold = try f.allocator.allocate(f.allocator.freeCount - 1)
        if case .noRoom(let e) = outcome(bytes) { #expect(e.code == .resourceExhausted) } else { Issue.record("expected noRoom") }
        f.allocator.release(hold)
        #expect(f.allocator.freeCount == free)
        // Started over after most of the blob: the second attempt's pages only.
        let a = arrival(f)
        feed(a, bytes, [64], to: bytes.count - 10)
        #expect(f.allocator.freeCount < free)
        feed(a, bytes, [50])
        let r = try a.finish(id: SequenceID(5), tenant: "t").get()
        #expect(f.allocator.freeCount == free - r.pageCount)
        _ = r.release(allocator: f.allocator)
        // Dropped mid-way (the fetch failed): pages back.
        let dropped = arrival(f)
        feed(dropped, bytes, [64], to: bytes.count / 2)
        dropped.abandon()
        #expect(f.allocator.freeCount == free)
        // Longer than the blob says (bytes after the last head): unusable, the rest goes to scratch.
        #expect(message(outcome(bytes + [1, 2, 3], length: bytes.count + 3)).contains("past its last head") ||
                message(outcome(bytes + [1, 2, 3], length: bytes.count + 3)).contains("payload"))
        #expect(f.allocator.freeCount == free)
    }

    @Test func aRestoreThatDoesNotFitTakesNothing() throws {
        let f = F(pages: 40)
        let (s, _) = try rich(f)
        let blob = SequenceBlob(capturing: s, memory: f.memory)
        let hold = try f.allocator.allocate(f.allocator.freeCount - 1)
        #expect(throws: KVDError.self) { try blob.restore(id: SequenceID(2), tenant: "t", allocator: f.allocator, memory: f.memory) }
        #expect(f.allocator.freeCount == 1)
        f.allocator.release(hold)
    }
}

extension Result {
    var failureValue: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
