import Foundation
import Synchronization

/// The one harness of the process, built on first use. libFuzzer calls the entry point from one
/// thread, one input at a time; the mutex makes that an invariant the compiler checks rather than an
/// assumption (and costs nothing next to an input's dozen requests).
private let shared = Mutex<Harness?>(nil)

/// Runs one input through the harness, building it (daemon core, victim, playground) the first time.
func runOne(_ input: [UInt8]) {
    shared.withLock { harness in
        if harness == nil { harness = makeHarness() }
        harness!.run(input)
    }
}

/// Builds the harness now, so set-up costs and failures are not charged to the first input.
func setUpHarness() {
    shared.withLock { harness in
        if harness == nil { harness = makeHarness() }
    }
    // Normal exits (libFuzzer's -max_total_time, -runs; the replay tool) remove the segment. A
    // crash leaves it behind in /dev/shm; scripts/fuzz.sh removes those of dead processes.
    atexit {
        shared.withLockIfAvailable { $0?.close() }
    }
}

/// A harness with the fuzz configuration; a failure to set one up stops the process.
func makeHarness() -> Harness {
    do { return try Harness() } catch { fatalError("cannot set up the fuzz harness: \(error)") }
}
