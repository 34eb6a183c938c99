import KVDCore
import KVDPluginAPI

/// Window-attention scores, optionally pooled: SnapKV's scorer (avg, kernel 5 by default), H2O's
/// (no pooling), HeadKV's (max, kernel 7).
public struct WindowAttentionScorer: TokenScorer {
    public let name = "window_attention"
    public let needsQueries = true
    public let params: [ParamSpec]

    public init(pooling: PoolingKind = .avg, kernel: Int = 5) {
        params = [
            ParamSpec("pooling", .string, default: .string(pooling.rawValue), "smoothing of scores: avg, max or none"),
            ParamSpec("kernel", .int, default: .int(Int64(kernel)), min: 1, max: 255, "pooling kernel size (odd)"),
        ]
    }

    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {
        let kind = params.string("pooling")
        guard PoolingKind(rawValue: kind) != nil else {
            throw .invalidArgument("parameter 'pooling' must be avg, max or none, got '\(kind)'")
        }
        let k = params.int("kernel")
        guard k % 2 == 1 else { throw .invalidArgument("parameter 'kernel' must be odd (same-size pooling), got \(k)") }
    }

    public func scores(_ context: CompactionContext, window: Int) throws(KVDError) -> [[Float]] {
        let kind = PoolingKind(rawValue: context.params.string("pooling")) ?? .none
        return try WindowAttention.scores(context, window: window, pooling: kind, kernel: context.params.int("kernel"))
    }
}
