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
    private var a: [Float], b: [Float], c: [Float]

    init(bytes: Int, rows: Int, tokens: Int, dim: Int, heads: Int) {
        self.bytes = bytes
        source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        target = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        source.initializeMemory(as: UInt8.self, repeating: 1, count: bytes)
        target.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        (self.rows, self.tokens, self.dim, self.heads) = (rows, tokens, dim, heads)
        a = [Float](repeating: 0.5, count: rows * dim)
        b = [Float](repeating: 0.25, count: tokens * dim)
        c = [Float](repeating: 0, count: rows * tokens)
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

    /// Seconds for the window-attention sgemm of every head, with `threads` OpenBLAS threads.
    mutating func sgemm(threads: Int) -> Double {
        kvd_blas_set_threads(Int32(threads))
        defer { kvd_blas_set_threads(1) }
        let (r, n, d, h) = (Int32(rows), Int32(tokens), Int32(dim), heads)
        return a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    seconds { for _ in 0..<h { kvd_sgemm_abt(r, n, d, 1, a.baseAddress!, b.baseAddress!, c.baseAddress!) } }
                }
            }
        }
    }
}

private struct Pointers: @unchecked Sendable {
    let src: UnsafeRawPointer
    let dst: UnsafeMutableRawPointer
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let t = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
}
