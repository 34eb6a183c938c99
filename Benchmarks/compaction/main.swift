import CKVDKernels
import Dispatch
import Foundation
import KVDCore
import KVDPluginAPI
import KVDPluginHost

// Compaction time of every built-in method on a Llama-3-8B-shaped slice, against its roofline
// measured in the same run: the larger of one memcpy pass over the K bytes the method reads and an
// sgemm doing the window-attention multiply-adds. Run: swift run -c release kvd-bench [tokens] [repeats]

let args = CommandLine.arguments
let tokens = args.count > 1 ? Int(args[1]) ?? 8192 : 8192
let repeats = args.count > 2 ? Int(args[2]) ?? 3 : 3
let layout = ModelLayout(name: "llama3-8b-slice", layers: 8, kvHeads: 8, qHeads: 32, headDim: 128, dtype: .f16, pageTokens: 16, defaultMethod: "snapkv")
let window = 32

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let t = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
}

func best(_ body: () throws -> Void) rethrows -> Double {
    var b = Double.infinity
    for _ in 0..<repeats { b = min(b, try seconds(body)) }
    return b
}

// A real sequence in page memory (ordinary memory standing in for the shm arena: same code path).
let pagesPerHead = (tokens + layout.pageTokens - 1) / layout.pageTokens
let pageCount = layout.headCount * pagesPerHead
let geometry = PageGeometry(pagesOffset: 0, pageBytes: layout.pageBytesUsed, pageCount: pageCount)
let buffer = UnsafeMutableRawPointer.allocate(byteCount: pageCount * layout.pageBytesUsed, alignment: 4096)
let memory = PageMemory(base: buffer, geometry: geometry)
let allocator = PageAllocator(pageCount: pageCount)
let sequence = KVSequence(id: SequenceID(1), layout: layout, tenant: "bench")
do {
    var rng = SplitMix64(seed: 42)
    let elements = layout.headCount * tokens * layout.headDim
    let k = (0..<elements).map { _ in Float16(Float.random(in: -1...1, using: &rng)) }
    let v = (0..<elements).map { _ in Float16(Float.random(in: -1...1, using: &rng)) }
    try k.withUnsafeBytes { kb in
        try v.withUnsafeBytes { vb in
            _ = try sequence.append(keys: kb, values: vb, tokens: tokens, allocator: allocator, memory: memory)
        }
    }
}
var queryRNG = SplitMix64(seed: 7)
let queries = (0..<(layout.layers * layout.qHeads * window * layout.headDim)).map { _ in Float.random(in: -1...1, using: &queryRNG) }
let observation = Observation(layers: layout.layers, qHeads: layout.qHeads, window: window, headDim: layout.headDim, queries: queries)
let view = SequenceView(layout: layout, heads: sequence.heads, memory: memory)

// Baselines.
let keyBytes = layout.headCount * tokens * layout.tokenBytes
let source = UnsafeMutableRawPointer.allocate(byteCount: keyBytes, alignment: 4096)
let target = UnsafeMutableRawPointer.allocate(byteCount: keyBytes, alignment: 4096)
source.initializeMemory(as: UInt8.self, repeating: 1, count: keyBytes)
target.initializeMemory(as: UInt8.self, repeating: 0, count: keyBytes)
let memcpyTime = best { target.copyMemory(from: source, byteCount: keyBytes) }

let rows = (layout.qHeads / layout.kvHeads) * window
let flops = 2.0 * Double(rows) * Double(tokens) * Double(layout.headDim) * Double(layout.headCount)
guard kvd_blas_available() != 0 else { fatalError("OpenBLAS not found: install libopenblas0") }
let a = [Float](repeating: 0.5, count: rows * layout.headDim)
let b = [Float](repeating: 0.25, count: tokens * layout.headDim)
var c = [Float](repeating: 0, count: rows * tokens)
// The same sgemm calls window attention makes (one per KV head), with all cores as BLAS threads.
kvd_blas_set_threads(Int32(ProcessInfo.processInfo.activeProcessorCount))
let sgemmTime = best {
    for _ in 0..<layout.headCount {
        kvd_sgemm_abt(Int32(rows), Int32(tokens), Int32(layout.headDim), 1, a, b, &c)
    }
}
kvd_blas_set_threads(1)
let roofline = max(memcpyTime, sgemmTime)

print("OpenBLAS kernel: \(String(cString: kvd_blas_core()))")
print("Llama-3-8B slice: \(layout.layers) layers × \(layout.kvHeads) KV heads × \(layout.qHeads) query heads × \(layout.headDim) dim, \(tokens) tokens f16, \(window) window queries; best of \(repeats); \(ProcessInfo.processInfo.activeProcessorCount) cores")
print(String(format: "memcpy of the %.0f MiB of keys: %.1f ms (%.1f GB/s); sgemm of the window attention (%.1f GFLOP): %.1f ms (%.0f GFLOP/s)",
             Double(keyBytes) / 1048576, memcpyTime * 1e3, Double(keyBytes) / memcpyTime / 1e9, flops / 1e9, sgemmTime * 1e3, flops / sgemmTime / 1e9))
print("")
print("| method | plan (ms) | ÷ memcpy | ÷ roofline |")
print("|---|---:|---:|---:|")
let scores = NSTemporaryDirectory() + "kvd-bench-scores.json"
var table: [String: [Double]] = [:]
for l in 0..<layout.layers { for h in 0..<layout.kvHeads { table["\(l)-\(h)"] = [Double(l * layout.kvHeads + h + 1)] } }
try JSONSerialization.data(withJSONObject: table).write(to: URL(fileURLWithPath: scores))
let only = ProcessInfo.processInfo.environment["KVD_BENCH_METHOD"]
for method in Catalog.builtinMethods where only == nil || only == method.descriptor.name {
    var overrides: [(name: String, value: ParamValue)] = []
    let names = Set(method.descriptor.params.map(\.name))
    if names.contains("budget") { overrides.append(("budget", .int(1024))) }
    if names.contains("scores") { overrides.append(("scores", .string(scores))) }
    let params = try method.descriptor.resolve(overrides)
    let context = CompactionContext(view: view, observation: observation, params: params, method: method.descriptor.name, baseDirectory: "")
    let t = try best { _ = try method.plan(context) }
    print(String(format: "| %@ | %.1f | %.2f× | %.2f× |", method.descriptor.name, t * 1e3, t / memcpyTime, t / roofline))
}
