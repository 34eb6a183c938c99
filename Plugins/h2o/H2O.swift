import KVDAttention
import KVDPluginAPI

/// H2O — Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs"
/// (NeurIPS 2023). Score = attention a token received from the observed queries (here: the window
/// queries, so it equals SnapKV without pooling); keep the top `budget` plus the recent window.
public enum H2O {
    public static let method = ComposedMethod(
        name: "h2o", description: "H2O (Zhang et al. 2023): cumulative attention heavy hitters plus the recent window",
        scorer: WindowAttentionScorer(pooling: .none, kernel: 1))
}
