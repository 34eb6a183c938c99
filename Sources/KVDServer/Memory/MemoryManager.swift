import Dispatch
import KVDConfig
import Synchronization

/// The background memory manager: every memory.interval_ms (and at once when an allocation takes a
/// segment above memory.high) it runs a reclaim pass over each tenant's segment on the store's
/// manager queue, never on the socket thread. `Reclaimer` says what a pass does.
final class MemoryManager: Sendable {
    private let store: Store
    /// Uptime (ns) when each segment last went above memory.high with no pass yet reaching low;
    /// 0 = not under pressure. Indexed like `store.spaces`; only touched on the manager queue.
    private let pressureSince: Mutex<[UInt64]>
    private let stopped = Atomic<Bool>(false)

    init(store: Store) {
        self.store = store
        pressureSince = Mutex(Array(repeating: 0, count: store.spaces.count))
    }

    func start() {
        store.setManagerPass { [self] in pass() }
        scheduleTick()
    }

    /// The next tick, memory.interval_ms from now (read each time: SIGHUP may change it).
    private func scheduleTick() {
        store.managerQueue.asyncAfter(deadline: .now() + .milliseconds(store.memory.intervalMilliseconds)) { [self] in
            guard !stopped.load(ordering: .acquiring) else { return }
            pass()
            scheduleTick()
        }
    }

    /// Stops the timer and waits for a running pass to end (before the segments are unmapped).
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        store.setManagerPass(nil)
        store.managerQueue.sync {}
    }

    /// One pass over every segment. On the manager queue.
    func pass() {
        dispatchPrecondition(condition: .onQueue(store.managerQueue))
        let settings = store.memory
        for (i, space) in store.spaces.enumerated() {
            let start = DispatchTime.now().uptimeNanoseconds
            // A background pass yields after a slice, so a segment with thousands of sequences
            // cannot hold up the others; the next tick carries on.
            let deadline = start + 250_000_000
            let above = Double(space.pages.usedCount) > settings.high * Double(space.pages.limit)
            let underPressure = pressureSince.withLock { since in
                if since[i] == 0, above { since[i] = start }
                return since[i] != 0
            }
            space.reclaimQueue.sync { _ = Reclaimer.pass(space, store, .watermarks(underPressure: underPressure), deadline: deadline) }
            track(i, space, settings)
        }
        let keep = settings.leaseSeconds > 0 ? settings.leaseSeconds + settings.orphanGraceSeconds + 60 : 3600
        let now = DispatchTime.now().uptimeNanoseconds
        if now > UInt64(keep * 1e9) { store.connections.forget(silentSince: now - UInt64(keep * 1e9)) }
    }

    /// Records how long a segment took from crossing memory.high to memory.low.
    private func track(_ i: Int, _ space: TenantSpace, _ settings: Configuration.Memory) {
        let limit = Double(space.pages.limit)
        let used = Double(space.pages.usedCount)
        pressureSince.withLock { since in
            guard since[i] != 0 else { return }
            let c = space.counters
            if used <= settings.low * limit {
                c.lastReclaimMicroseconds.store((DispatchTime.now().uptimeNanoseconds - since[i]) / 1000, ordering: .relaxed)
                c.lastReclaimReachedLow.store(true, ordering: .relaxed)
                since[i] = 0
            } else {
                c.lastReclaimReachedLow.store(false, ordering: .relaxed)
            }
        }
    }
}
