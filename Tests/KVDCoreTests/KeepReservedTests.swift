import KVDCore
import Testing

/// Commit with `keepReserved`: a reservation committed in pieces publishes, piece by piece, exactly
/// what one inline Append of the same tokens would, and keeps the rest reserved in the same slots.
@Suite struct KeepReservedTests {
    typealias T = SequenceTests
    static let layout = SequenceTests.layout

    /// Writes positions start..<start+n of every head into the reservation's runs, beginning `skip`
    /// tokens into them (tokens committed earlier), as a client would.
    static func write(_ runs: [[TokenRun]], skip: Int, start: Int, n: Int, _ f: T.Fixture) {
        for (h, headRuns) in runs.enumerated() {
            var t = 0
            for run in headRuns {
                for i in 0..<run.count {
                    if t >= skip && t < skip + n {
                        let p = start + t - skip
                        for d in 0..<layout.headDim {
                            f.memory.key(run.page, slot: run.slot + i, layout).storeBytes(of: T.k(h, p, d), toByteOffset: d * 4, as: Float.self)
                            f.memory.value(run.page, slot: run.slot + i, layout).storeBytes(of: T.v(h, p, d), toByteOffset: d * 4, as: Float.self)
                        }
                    }
                    t += 1
                }
            }
        }
    }

    @Test func oneTokenPerCommitMatchesInlineAppends() throws {
        let f = T.Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try T.append(s, f, start: 0, n: 2)
        let runs = try s.reserve(tokens: 7, id: ReservationID(3), allocator: f.allocator)
        let held = f.allocator.usedCount  // ceil(9/3) = 3 pages × 4 heads
        #expect(held == 12)
        for step in 0..<7 {
            Self.write(runs, skip: step, start: 2 + step, n: 1, f)
            let first = try s.commit(ReservationID(3), tokens: 1, keepReserved: true, allocator: f.allocator)
            #expect(first == 2 + step)
            #expect(s.length == 3 + step)
            // The rest stays reserved under the same id, and no page is freed or taken meanwhile.
            #expect(s.reservation?.tokens == (step < 6 ? 6 - step : nil))
            #expect(s.reservation.map { $0.id } == (step < 6 ? ReservationID(3) : nil))
            #expect(f.allocator.usedCount == held)
            #expect(s.pageCount == held)
            for h in 0..<4 {
                #expect(s.heads[h].count == 3 + step)
                #expect(s.heads[h].pages.count == (3 + step + 2) / 3)
            }
        }
        // Same bytes and positions as a sequence fed by inline appends.
        let g = T.Fixture(pages: 64)
        let inline = KVSequence(id: SequenceID(2), layout: Self.layout, tenant: "")
        for p in 0..<9 { try T.append(inline, g, start: p, n: 1) }
        for h in 0..<4 {
            #expect(T.read(s, f, head: h) == T.read(inline, g, head: h))
            #expect(s.heads[h].positions == inline.heads[h].positions)
        }
        #expect(s.generation == inline.generation)
    }

    @Test func rangeErrorsChangeNothing() throws {
        let f = T.Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        _ = try s.reserve(tokens: 4, id: ReservationID(1), allocator: f.allocator)
        try s.commit(ReservationID(1), tokens: 3, keepReserved: true, allocator: f.allocator)
        let before = (s.heads, s.length, f.allocator.usedCount)
        #expect(throws: KVDError.failedPrecondition("commit: num_tokens 2 is more than the 1 still reserved in reservation 1")) {
            try s.commit(ReservationID(1), tokens: 2, keepReserved: true, allocator: f.allocator)
        }
        #expect(throws: KVDError.invalidArgument("commit: num_tokens must be at least 1 (use abort to drop the reservation)")) {
            try s.commit(ReservationID(1), tokens: 0, keepReserved: true, allocator: f.allocator)
        }
        #expect(throws: KVDError.self) { try s.commit(ReservationID(1), tokens: Int.max, keepReserved: true, allocator: f.allocator) }
        #expect(throws: KVDError.self) { try s.commit(ReservationID(2), tokens: 1, keepReserved: true, allocator: f.allocator) }
        #expect(s.heads == before.0 && s.length == before.1 && f.allocator.usedCount == before.2)
        #expect(s.reservation?.tokens == 1)
    }

    @Test func abortAfterPartialCommitsKeepsTheCommittedAndFreesTheTail() throws {
        let f = T.Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        try T.append(s, f, start: 0, n: 1)
        let runs = try s.reserve(tokens: 10, id: ReservationID(5), allocator: f.allocator)
        #expect(f.allocator.usedCount == 4 * 4)  // ceil(11/3)
        Self.write(runs, skip: 0, start: 1, n: 3, f)
        try s.commit(ReservationID(5), tokens: 2, keepReserved: true, allocator: f.allocator)
        try s.commit(ReservationID(5), tokens: 1, keepReserved: true, allocator: f.allocator)
        try s.abort(ReservationID(5), allocator: f.allocator)
        #expect(s.reservation == nil)
        #expect(s.length == 4)
        #expect(f.allocator.usedCount == 2 * 4)  // ceil(4/3): the tail's pages are back
        #expect(s.pageCount == 8)
        for h in 0..<4 {
            #expect(T.read(s, f, head: h).keys == (0..<4).flatMap { p in (0..<2).map { T.k(h, p, $0) } })
        }
        // The sequence takes appends and reservations again.
        try T.append(s, f, start: 4, n: 1)
        #expect(s.length == 5)
    }

    @Test func aPlainCommitAfterPartialOnesClosesTheReservation() throws {
        let f = T.Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        _ = try s.reserve(tokens: 9, id: ReservationID(1), allocator: f.allocator)
        try s.commit(ReservationID(1), tokens: 1, keepReserved: true, allocator: f.allocator)
        try s.commit(ReservationID(1), tokens: 3, allocator: f.allocator)  // frees the rest
        #expect(s.reservation == nil)
        #expect(s.length == 4)
        #expect(f.allocator.usedCount == 2 * 4)
    }

    @Test func releaseWithAnOpenPartlyCommittedReservationFreesEverything() throws {
        let f = T.Fixture(pages: 64)
        let s = KVSequence(id: SequenceID(1), layout: Self.layout, tenant: "")
        _ = try s.reserve(tokens: 8, id: ReservationID(1), allocator: f.allocator)
        try s.commit(ReservationID(1), tokens: 4, keepReserved: true, allocator: f.allocator)
        _ = s.release(allocator: f.allocator)
        #expect(f.allocator.usedCount == 0)
    }
}
