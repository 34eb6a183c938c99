import KVDAttention
import KVDPluginAPI

/// SnapKV — Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation" (NeurIPS 2024).
/// Window attention of the last w queries (GQA-averaged), smoothed with a 1-D pool (avg, kernel 5 as
/// in kvpress; kind and kernel are parameters); keep the top `budget` tokens per head plus the window.
public enum SnapKV {
    public static let method = ComposedMethod(
        name: "snapkv", description: "SnapKV (Li et al. 2024): window attention, pooled, top-k per head",
        scorer: WindowAttentionScorer(pooling: .avg, kernel: 5))
}
