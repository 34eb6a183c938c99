import CKVDKernels
import Foundation
import KVDCore
import KVDPluginAPI
import KVDPluginHost
import BalanceKV

// Compaction time of every built-in method on a Llama-3-8B-shaped slice, single-threaded and with
// all cores, against its roofline measured in the same run: the larger of one memcpy pass over the
// bytes the method must read (keys it scores + kept K/V that packing moves) and an OpenBLAS sgemm
// doing the window-attention multiply-adds (methods that take window queries). Timed: what the
// daemon runs for a Compact request (plan, plan check, packing, freeing pages), not the wire.
//
//   swift run -c release kvd-bench [--tokens 8192] [--repeats 3] [--methods snapkv,knorm] [--json FILE]
//                                  [--clock cpu]
// `--clock cpu` times one-thread runs only, by the calling thread's CPU clock (method and baselines
// alike): a ratio that other jobs on a shared machine barely move.

struct Options {
    var tokens = 8192
    var repeats = 3
    var methods: Set<String>? = nil
    var json: String? = nil

    init(_ args: [String]) {
        var i = 1
        func value() -> String {
            i += 1
            guard i < args.count else { fatalError("\(args[i - 1]) needs a value") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--tokens": tokens = Int(value()) ?? tokens
            case "--repeats": repeats = max(1, Int(value()) ?? repeats)
            case "--methods": methods = Set(value().split(separator: ",").map(String.init))
            case "--json": json = value()
            case "--clock":
                let clock = value()
                guard clock == "cpu" || clock == "wall" else { fatalError("--clock takes cpu or wall, got \(clock)") }
                threadCPUClock = clock == "cpu"
            default: fatalError("unknown argument \(args[i]); see the comment at the top of main.swift")
            }
            i += 1
        }
    }
}

let options = Options(CommandLine.arguments)
let window = 32
let fixture = Fixture(tokens: options.tokens, window: window)
let layout = fixture.layout
let cores = ProcessInfo.processInfo.activeProcessorCount
guard kvd_blas_available() != 0 else { fatalError("OpenBLAS not found: install libopenblas0") }
let baselines = Baselines(
    bytes: fixture.keyBytes, rows: (layout.qHeads / layout.kvHeads) * window, tokens: options.tokens,
    dim: layout.headDim, heads: layout.headCount)

let scoresFile = NSTemporaryDirectory() + "kvd-bench-scores.json"
var scoreTable: [String: [Double]] = [:]
for l in 0..<layout.layers { for h in 0..<layout.kvHeads { scoreTable["\(l)-\(h)"] = [Double(l * layout.kvHeads + h + 1)] } }
try JSONSerialization.data(withJSONObject: scoreTable).write(to: URL(fileURLWithPath: scoresFile))

/// Methods that decide from positions only (no key reads).
let positional: Set<String> = ["streamingllm", "kvsharer"]

func params(for method: any CompactionMethod) throws -> ResolvedParams {
    var overrides: [(name: String, value: ParamValue)] = []
    let names = Set(method.descriptor.params.map(\.name))
    if names.contains("budget") { overrides.append(("budget", .int(1024))) }
    if names.contains("scores") { overrides.append(("scores", .string(scoresFile))) }
    if names.contains("alias_map") { overrides.append(("alias_map", .string("7:6,5:4,3:2"))) }
    return try method.descriptor.resolve(overrides)
}

/// Multiply-adds the method must do, as FLOP: the window attention for methods that take window
/// queries, the blocks' Gram matrices for BalanceKV's walk, none for the rest.
@MainActor func flops(of method: any CompactionMethod, _ p: ResolvedParams) -> Double {
    if method.needsQueries { return baselines.flops }
    guard method.descriptor.name == "balancekv" else { return 0 }
    let middle = options.tokens - p.int("sinks") - p.int("recent")
    return Double(layout.headCount) * BalancedWalk.gramFlops(
        middle: middle, dim: layout.headDim, block: p.int("block"), rounds: p.int("itrs"), uniform: p.string("variant") == "uniform")
}

/// K and V bytes the packing of `plan` copies.
func movedBytes(_ plan: CompactionPlan) -> Int {
    plan.kept.reduce(0) { sum, kept in
        sum + CompactionPlan.packMoves(kept: kept, pageTokens: layout.pageTokens).reduce(0) { $0 + $1.count } * 2 * fixture.tokenBytes
    }
}

struct Row: Codable {
    var method: String
    var threads: Int
    var seconds: [Double] = []
    var readBytes = 0
    var flops = 0.0
}

var rows: [Row] = []
var memcpyBest = [1: Double.infinity, cores: Double.infinity]
var sgemmBest = [1: Double.infinity, cores: Double.infinity]
for method in Catalog.builtinMethods where options.methods?.contains(method.descriptor.name) ?? true {
    let name = method.descriptor.name
    let resolved = try params(for: method)
    for threads in threadCPUClock ? [1] : Set([1, cores]).sorted() {
        var row = Row(method: name, threads: threads)
        row.flops = flops(of: method, resolved)
        for _ in 0..<options.repeats {
            // Baselines interleaved with the method, so machine noise hits both alike.
            memcpyBest[threads] = min(memcpyBest[threads]!, baselines.memcpy(threads: threads))
            if row.flops > 0 { sgemmBest[threads] = min(sgemmBest[threads]!, baselines.sgemm(threads: threads)) }
            let seq = try fixture.sequence()
            let view = SequenceView(layout: layout, heads: seq.heads, memory: fixture.memory, aliases: seq.aliases)
            let context = CompactionContext(view: view, observation: fixture.observation, params: resolved, method: name, baseDirectory: "")
            ComputeThreads.set(threads)
            var planned: MethodPlan?
            let t = try seconds {
                planned = try CompactionRunner.run(method, context, sequence: seq, allocator: fixture.allocator, memory: fixture.memory).planned
            }
            ComputeThreads.set(0)
            row.seconds.append(t)
            row.readBytes = (positional.contains(name) ? 0 : fixture.keyBytes) + movedBytes(planned!.plan)
            fixture.release(seq)
        }
        rows.append(row)
    }
}

// Report: the roofline uses the best baseline of the whole run (the machine's limit).
func ms(_ s: Double) -> String { String(format: "%.1f", s * 1e3) }
print("OpenBLAS kernel: \(String(cString: kvd_blas_core())); \(cores) cores")
print("Llama-3-8B slice: \(layout.layers) layers × \(layout.kvHeads) KV heads × \(layout.qHeads) query heads × \(layout.headDim) dim, \(options.tokens) tokens f16, \(window) window queries; \(options.repeats) repeats")
for t in memcpyBest.keys.sorted() where memcpyBest[t]!.isFinite {
    let gbs = Double(fixture.keyBytes) / memcpyBest[t]! / 1e9
    let sg = sgemmBest[t]!.isFinite ? String(format: "%.0f GFLOP/s", baselines.flops / sgemmBest[t]! / 1e9) : "not run"
    print(String(format: "%d thread(s): memcpy %.1f GB/s; window-attention sgemm (%.1f GFLOP) %@", t, gbs, baselines.flops / 1e9, sg))
}
print("")
print("| method | threads | min ms | median ms | max ms | read pass ms | sgemm ms | roofline ms | min ÷ roofline |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
var report: [[String: Any]] = []
for r in rows {
    let sorted = r.seconds.sorted()
    let read = Double(r.readBytes) / Double(fixture.keyBytes) * memcpyBest[r.threads]!
    // The method's multiply-adds at the sgemm rate measured in this run.
    let sgemm = r.flops > 0 ? r.flops / baselines.flops * sgemmBest[r.threads]! : 0
    let roof = max(read, sgemm)
    let ratio = roof > 0 ? String(format: "%.2f×", sorted.first! / roof) : "—"
    print("| \(r.method) | \(r.threads) | \(ms(sorted.first!)) | \(ms(sorted[sorted.count / 2])) | \(ms(sorted.last!)) | \(ms(read)) | \(r.flops > 0 ? ms(sgemm) : "—") | \(ms(roof)) | \(ratio) |")
    report.append([
        "method": r.method, "threads": r.threads, "seconds": r.seconds, "read_bytes": r.readBytes,
        "read_pass_s": read, "sgemm_s": sgemm, "roofline_s": roof, "flops": r.flops,
    ])
}
if let path = options.json {
    let doc: [String: Any] = [
        "tokens": options.tokens, "window": window, "clock": threadCPUClock ? "thread_cpu" : "wall", "cores": cores, "blas_core": String(cString: kvd_blas_core()),
        "key_bytes": fixture.keyBytes, "memcpy_s": memcpyBest.filter { $0.value.isFinite }.map { ["threads": $0.key, "seconds": $0.value] },
        "rows": report,
    ]
    try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
}
