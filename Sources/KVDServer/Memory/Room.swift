import Dispatch
import KVDCore

extension TenantStore {
    /// Runs `allocate` (an Append, Reserve or Fork on the sequence's queue); when the segment has no room
    /// for it, runs a reclaim pass for `pages` pages (bounded by memory.reclaim_wait_ms) and tries
    /// once more. The caller's own sequence is busy, so the pass never touches it. Afterwards, usage
    /// above memory.high wakes the background manager.
    func withRoom<T>(pages: Int, _ allocate: () throws(KVDError) -> T) throws(KVDError) -> T {
        defer { nudgeIfAboveHigh() }
        do {
            return try allocate()
        } catch where error.code == .resourceExhausted && mayReclaim {
            let wait = UInt64(memory.reclaimWaitMilliseconds) * 1_000_000
            guard wait > 0 else { throw error }
            space.counters.synchronousReclaims.add(1, ordering: .relaxed)
            let deadline = DispatchTime.now().uptimeNanoseconds + wait
            let freed = space.reclaimQueue.sync { Reclaimer.pass(space, shared, .room(pages: pages), deadline: deadline) }
            do {
                return try allocate()
            } catch where error.code == .resourceExhausted {
                throw .resourceExhausted(
                    "\(error.message.dropFirst(5)) (the memory manager reclaimed \(freed) pages; what is left is pinned, busy or below memory.floor_tokens)")
            }
        }
    }

    private func nudgeIfAboveHigh() {
        let limit = space.pages.limit
        if Double(space.pages.usedCount) > memory.high * Double(limit) { shared.nudgeManager() }
    }
}
