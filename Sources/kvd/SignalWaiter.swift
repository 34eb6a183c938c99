import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM, SIGINT and SIGHUP, handled by a thread of their own that waits for them with `sigwait`.
///
/// `block()` runs first, before kvd starts any thread: every thread started later (Dispatch workers,
/// libzmq's I/O threads, OpenBLAS) inherits the blocked mask, so the kernel keeps a signal pending
/// until the waiting thread takes it. Nothing is lost and nothing waits for a busy thread pool —
/// with Dispatch signal sources, a SIGTERM sent while a compaction held the pool's threads could go
/// unanswered for seconds (tests saw daemons killed after a 10 s grace).
enum SignalWaiter {
    private static var handled: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
        return set
    }

    /// Blocks the signals in the calling thread (and so in every thread it starts afterwards).
    static func block() {
        var set = handled
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Starts the waiting thread: SIGHUP calls `reload`, SIGTERM and SIGINT call `stop`. Signals
    /// that arrived since `block()` are delivered now.
    static func start(stop: @escaping @Sendable () -> Void, reload: @escaping @Sendable () -> Void) {
        let thread = Thread {
            var set = handled
            while true {
                var sig: Int32 = 0
                guard sigwait(&set, &sig) == 0 else { continue }
                if sig == SIGHUP { reload() } else { stop() }
            }
        }
        thread.name = "kvd-signals"
        thread.start()
    }
}
