// Self-test of the TSan set-up (scripts/sanitizers.sh), built with -sanitize=thread and run with
// tsan_swift_mutex.c preloaded. Threads contend on a Synchronization.Mutex, as kvd's handlers do on
// the page free list: the counter behind the Mutex must not be reported (the shim makes the
// kernel's lock hand-overs visible), and a plain counter bumped the same way must be, so a clean
// kvd run means "no race found", not "TSan could not see".
import Dispatch
import Synchronization

final class Counters: @unchecked Sendable {  // safe: deliberately racy, for TSan to report
    var guarded = [Int](repeating: 0, count: 64)
    var unguarded = 0
}

let counters = Counters()
let lock = Mutex(())

@inline(never) func bumpGuarded() {
    // Enough work inside the lock that the other threads spin out and block in the kernel.
    lock.withLock { _ in for i in counters.guarded.indices { counters.guarded[i] += 1 } }
}

@inline(never) func bumpUnguarded() { counters.unguarded += 1 }

DispatchQueue.concurrentPerform(iterations: 4) { _ in
    for _ in 0..<20_000 { bumpGuarded() }
    bumpUnguarded()
}
precondition(counters.guarded.allSatisfy { $0 == 80_000 }, "the Mutex lost an update")
print("guarded \(counters.guarded[0]), unguarded \(counters.unguarded)")
