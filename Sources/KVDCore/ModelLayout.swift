/// Shape of one model's KV cache: what every sequence of that model holds per (layer, KV head).
public struct ModelLayout: Sendable, Equatable {
    public let name: String
    public let layers: Int
    public let kvHeads: Int
    public let qHeads: Int
    public let headDim: Int
    public let dtype: DType
    /// Tokens per page (P).
    public let pageTokens: Int
    /// Method `Compact` runs when the request names none and no policy applies.
    public let defaultMethod: String
    /// Policy `Compact` runs when the request names none and no rule matches ("" = none).
    public let defaultPolicy: String
    /// Per layer: its sliding attention window W in tokens (a query at position p attends to keys at
    /// p - W < k <= p), 0 for full attention. Empty = every layer full. See docs/MEMORY.md.
    public let layerWindows: [Int]

    /// Largest window a layer may declare: 2^24 tokens (positions are int32, and a window past that
    /// would free nothing in any sequence a client can build in reasonable time).
    public static let maxWindow = 1 << 24

    public init(
        name: String, layers: Int, kvHeads: Int, qHeads: Int, headDim: Int, dtype: DType,
        pageTokens: Int, defaultMethod: String, defaultPolicy: String = "", layerWindows: [Int] = []
    ) {
        self.name = name
        self.layers = layers
        self.kvHeads = kvHeads
        self.qHeads = qHeads
        self.headDim = headDim
        self.dtype = dtype
        self.pageTokens = pageTokens
        self.defaultMethod = defaultMethod
        self.defaultPolicy = defaultPolicy
        self.layerWindows = layerWindows
    }

    /// Sliding window of `layer` in tokens, 0 for full attention.
    @inline(__always) public func window(layer: Int) -> Int { layerWindows.isEmpty ? 0 : layerWindows[layer] }
    /// Whether any layer slides (only then do appends free anything).
    public var hasSlidingLayers: Bool { layerWindows.contains { $0 > 0 } }

    /// Number of (layer, KV head) pairs; each has its own page list.
    public var headCount: Int { layers * kvHeads }
    /// Bytes of one token's key (or value) in one head.
    public var tokenBytes: Int { headDim * dtype.size }
    /// Bytes of one page as this model uses it: K block then V block.
    public var pageBytesUsed: Int { 2 * pageTokens * tokenBytes }
    /// Flat index of (layer, head), layer-major.
    @inline(__always) public func headIndex(layer: Int, head: Int) -> Int { layer * kvHeads + head }

    /// Checks the fields make sense together; `problem` names the first field that does not.
    public func validationProblem() -> String? {
        if name.isEmpty { return "name: must not be empty" }
        if layers < 1 { return "layers: must be at least 1" }
        if kvHeads < 1 { return "kv_heads: must be at least 1" }
        if qHeads < kvHeads || qHeads % kvHeads != 0 { return "q_heads: must be a multiple of kv_heads (\(kvHeads))" }
        if headDim < 1 || headDim > 16384 { return "head_dim: must be in 1...16384" }
        if pageTokens < 1 || pageTokens > 65536 { return "page_tokens: must be in 1...65536" }
        if !layerWindows.isEmpty {
            if layerWindows.count != layers {
                return "layer_windows: has \(layerWindows.count) entries for \(layers) layers; give one per layer (0 = full attention)"
            }
            if let l = layerWindows.firstIndex(where: { $0 < 0 || $0 > Self.maxWindow }) {
                return "layer_windows: entry \(l) is \(layerWindows[l]); each must be 0 (full attention) or a window of 1...\(Self.maxWindow) tokens"
            }
        }
        return nil
    }
}
