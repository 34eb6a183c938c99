import CKVDKernels
import Dispatch
import Foundation
import KVDPluginAPI

/// The physical limits a compaction is compared with, measured in the same run: memcpy bandwidth
/// (one thread, and split over all threads) and the sgemm window attention needs.
struct Baselines {
    let bytes: Int
    private let source: UnsafeMutableRawPointer
    private let target: UnsafeMutableRawPointer
    // The window-attention multiply of one KV head: [G·w, d] × [d, n].
    private let rows: Int, tokens: Int, dim: Int, heads: Int
    private let a: [Float], b: [Float]

    init(bytes: Int, rows: Int, tokens: Int, dim: Int, heads: Int) {
        self.bytes = bytes
        source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        target = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        source.initializeMemory(as: UInt8.self, repeating: 1, count: bytes)
        target.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        (self.rows, self.tokens, self.dim, self.heads) = (rows, tokens, dim, heads)
        a = [Float](repeating: 0.5, count: rows * dim)
        b = [Float](repeating: 0.25, count: tokens * dim)
    }

    var flops: Double { 2.0 * Double(rows) * Double(tokens) * Double(dim) * Double(heads) }

    /// Seconds for one memcpy of `bytes`, split over `threads` threads (contiguous chunks).
    func memcpy(threads: Int) -> Double {
        let (src, dst, total) = (UnsafeRawPointer(source), target, bytes)
        let chunk = (total + threads - 1) / threads
        return seconds {
            if threads == 1 { dst.copyMemory(from: src, byteCount: total); return }
            let shared = Pointers(src: src, dst: dst)
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let start = t * chunk
                let n = min(chunk, total - start)
                if n > 0 { (shared.dst + start).copyMemory(from: shared.src + start, byteCount: n) }
            }
        }
    }

    /// Seconds for the window-attention sgemm of every head on `threads` threads, the way the
    /// methods run it: heads split over threads, each sgemm single-threaded (OpenBLAS's own threads
    /// only add wake-ups at these sizes).
    func sgemm(threads: Int) -> Double {
        let (r, n, d, heads) = (Int32(rows), Int32(tokens), Int32(dim), self.heads)
        let shared = Matrices(a: a, b: b, threads: threads, outputCount: rows * tokens)
        return seconds {
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                shared.a.withUnsafeBufferPointer { a in
                    shared.b.withUnsafeBufferPointer { b in
                        let c = shared.output(t)
                        for _ in stride(from: t, to: heads, by: threads) { kvd_sgemm_abt(r, n, d, 1, a.baseAddress!, b.baseAddress!, c) }
                    }
                }
            }
        }
    }
}

/// Inputs of the sgemm baseline and one output buffer per thread: raw allocations, so threads never
/// touch a shared Swift array mutably (which would race on its copy-on-write check).
private final class Matrices: @unchecked Sendable {  // safe: filled before the threads start, then each thread reads only
    let a: [Float], b: [Float]
    private let outputs: [UnsafeMutablePointer<Float>]
    init(a: [Float], b: [Float], threads: Int, outputCount: Int) {
        (self.a, self.b) = (a, b)
        outputs = (0..<threads).map { _ in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: outputCount)
            p.initialize(repeating: 0, count: outputCount)
            return p
        }
    }
    deinit { for p in outputs { p.deallocate() } }
    func output(_ t: Int) -> UnsafeMutablePointer<Float> { outputs[t] }
}

private struct Pointers: @unchecked Sendable {  // safe: each thread writes its own rows
    let src: UnsafeRawPointer
    let dst: UnsafeMutableRawPointer
}

/// Wall-clock seconds of `body`, or with `--clock cpu` the calling thread's CPU seconds: on a
/// shared machine other jobs' load stretches wall time but not the CPU time a one-thread run
/// spends (every one-thread step runs on the calling thread: the methods' workers, a one-iteration
/// concurrentPerform, the packing).
func seconds(_ body: () throws -> Void) rethrows -> Double {
    let t = now()
    try body()
    return now() - t
}

nonisolated(unsafe) var threadCPUClock = false  // safe: set once from the arguments before any timing

private func now() -> Double {
    var ts = timespec()
    clock_gettime(threadCPUClock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
