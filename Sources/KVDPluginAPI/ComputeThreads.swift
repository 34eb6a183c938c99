import Dispatch
import Foundation
import Synchronization

/// How many threads one compaction may use. Every method's per-head work goes through here, so one
/// setting (config `server.compute_threads`, `kvd-bench`'s single-thread runs) bounds them all.
/// 0, the default, means every core the process may run on.
public enum ComputeThreads {
    private static let configured = Atomic<Int>(0)

    /// Threads a compaction uses now (at least 1).
    public static var count: Int {
        let n = configured.load(ordering: .relaxed)
        return n > 0 ? n : max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Sets the limit; 0 means every core.
    public static func set(_ threads: Int) { configured.store(max(0, threads), ordering: .relaxed) }

    /// Runs `body(worker, workers)` once per worker, in parallel, with workers = min(count, items).
    /// A worker handles items worker, worker + workers, ...: one scratch buffer per worker then
    /// serves many heads (fresh multi-megabyte buffers per head would page-fault every time).
    public static func workers(for items: Int, _ body: @Sendable (_ worker: Int, _ workers: Int) -> Void) {
        let n = max(1, min(count, items))
        if n == 1 { body(0, 1); return }
        DispatchQueue.concurrentPerform(iterations: n) { w in body(w, n) }
    }

    /// Runs `body(i)` for i in 0..<items on up to `count` threads.
    public static func forEach(_ items: Int, _ body: @escaping @Sendable (Int) -> Void) {
        workers(for: items) { worker, workers in
            for i in stride(from: worker, to: items, by: workers) { body(i) }
        }
    }
}
