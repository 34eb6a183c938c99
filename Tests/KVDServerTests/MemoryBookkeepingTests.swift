import Foundation
import KVDCore
import Testing

@testable import KVDServer

@Suite struct MemoryBookkeepingTests {
    @Test func leaseRunsFromTheLaterOfTheSequencesTouchAndItsOwnersLastRequest() {
        let lease = SequenceLease(owner: 7, now: 100, pinned: false)
        #expect(lease.expiry(lease: 50, lastSeen: [:]) == 150)
        #expect(lease.expiry(lease: 50, lastSeen: [7: 300]) == 350, "any request of the owner renews it")
        #expect(lease.expiry(lease: 50, lastSeen: [8: 900]) == 150, "another connection's requests do not")
        lease.touch(by: 8, now: 400)
        #expect(lease.expiry(lease: 50, lastSeen: [8: 900]) == 950, "touching it makes the toucher its owner")
        #expect(lease.reservationExpiry(lease: 50, lastSeen: [:]) == nil)
        lease.reservationOwner.store(9, ordering: .relaxed)
        lease.reservationMade.store(500, ordering: .relaxed)
        #expect(lease.reservationExpiry(lease: 50, lastSeen: [9: 520]) == 570)
    }

    @Test func connectionsGetStableNumbersAndQuietOnesAreForgotten() {
        let c = ConnectionLeases()
        let a = c.touch([1, 2], now: 10)
        let b = c.touch([3], now: 20)
        #expect(a != b && c.touch([1, 2], now: 30) == a)
        #expect(c.snapshot() == [a: 30, b: 20])
        c.forget(silentSince: 25)
        #expect(c.snapshot() == [a: 30] && c.count == 1)
        #expect(c.touch([3], now: 40) != b, "a forgotten identity starts afresh")
    }

    @Test func evictionLogAnswersEvictedAndIsBounded() {
        let log = EvictionLog(capacity: 3)
        #expect(log.error(for: 1) == nil)
        for id in 1...5 { log.record(UInt64(id), "evicted by the memory manager (test)") }
        #expect(log.error(for: 1) == nil && log.error(for: 2) == nil, "the oldest records go first")
        let e = log.error(for: 5)
        #expect(e?.code == .evicted)
        #expect(e?.message.contains("sequence 5 was evicted by the memory manager (test) at ") == true)
        log.forget(5)
        #expect(log.error(for: 5) == nil)
        for id in 6...20 { log.record(UInt64(id), "x") }
        #expect(log.error(for: 20) != nil && log.error(for: 17) == nil)
    }
}
