import KVDCore

/// The runtime's last `window` query vectors of every query head, `[layers, q_heads, window,
/// head_dim]` as f32: what window-attention scorers (SnapKV, H2O, HeadKV, ...) score with.
public struct Observation: Sendable {
    public let layers: Int
    public let qHeads: Int
    public let window: Int
    public let headDim: Int
    /// Row-major `[layers, q_heads, window, head_dim]`.
    public let queries: [Float]

    public init(layers: Int, qHeads: Int, window: Int, headDim: Int, queries: [Float]) {
        precondition(queries.count == layers * qHeads * window * headDim)
        self.layers = layers
        self.qHeads = qHeads
        self.window = window
        self.headDim = headDim
        self.queries = queries
    }

    /// Offset of query head `q` of `layer` in `queries` (`window * head_dim` floats follow).
    @inline(__always) public func offset(layer: Int, qHead q: Int) -> Int {
        (layer * qHeads + q) * window * headDim
    }
}
