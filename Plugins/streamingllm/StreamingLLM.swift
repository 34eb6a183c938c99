import KVDCore
import KVDPluginAPI

/// StreamingLLM — Xiao et al., "Efficient Streaming Language Models with Attention Sinks" (ICLR 2024).
/// Keeps the first `sinks` tokens (the attention sinks) and the last `recent` tokens of every head.
/// Needs no queries. A head holding no more than `sinks + recent` tokens keeps everything.
public struct StreamingLLM: CompactionMethod {
    public init() {}

    public let descriptor = MethodDescriptor(
        name: "streamingllm",
        description: "StreamingLLM (Xiao et al. 2024): keep the first `sinks` and the last `recent` tokens",
        params: [
            ParamSpec("sinks", .int, default: .int(4), min: 0, max: 16_777_216, "tokens kept at the start of each head"),
            ParamSpec("recent", .int, default: .int(64), min: 0, max: 16_777_216, "tokens kept at the end of each head"),
        ])

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        if params.int("sinks") + params.int("recent") <= 0 {
            throw .invalidArgument("streamingllm: sinks + recent must be > 0 (got sinks=\(params.int("sinks")), recent=\(params.int("recent")))")
        }
    }

    public func plan(_ context: CompactionContext) throws(KVDError) -> MethodPlan {
        let sinks = context.params.int("sinks")
        let recent = context.params.int("recent")
        let kept = context.view.headCounts.map { n in
            n <= sinks + recent ? (0..<Int32(n)).map { $0 } : (0..<Int32(sinks)).map { $0 } + (Int32(n - recent)..<Int32(n)).map { $0 }
        }
        return MethodPlan(plan: CompactionPlan(kept: kept), sinks: sinks, window: recent, budgets: kept.map { _ in 0 }, reportBudgets: false)
    }
}
