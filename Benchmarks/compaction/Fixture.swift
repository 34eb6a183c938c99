import KVDCore
import KVDPluginAPI

/// The cache every method compacts: random f16 K/V of one Llama-3-8B slice in page memory
/// (ordinary memory standing in for the shm arena: the same paging, packing and f16 code paths),
/// plus random window queries. Each repeat appends a fresh copy, so every method starts from the
/// same uncompacted sequence.
struct Fixture {
    let layout: ModelLayout
    let tokens: Int
    let window: Int
    let memory: PageMemory
    let allocator: PageAllocator
    let observation: Observation
    private let keys: [Float16]
    private let values: [Float16]

    init(tokens: Int, window: Int) {
        layout = ModelLayout(
            name: "llama3-8b-slice", layers: 8, kvHeads: 8, qHeads: 32, headDim: 128, dtype: .f16,
            pageTokens: 16, defaultMethod: "snapkv")
        self.tokens = tokens
        self.window = window
        let pageCount = layout.headCount * ((tokens + layout.pageTokens - 1) / layout.pageTokens)
        let geometry = PageGeometry(pagesOffset: 0, pageBytes: layout.pageBytesUsed, pageCount: pageCount)
        let base = UnsafeMutableRawPointer.allocate(byteCount: pageCount * layout.pageBytesUsed, alignment: 4096)
        memory = PageMemory(base: base, geometry: geometry)
        allocator = PageAllocator(pageCount: pageCount)
        var rng = SplitMix64(seed: 42)
        let elements = layout.headCount * tokens * layout.headDim
        keys = (0..<elements).map { _ in Float16(Float.random(in: -1...1, using: &rng)) }
        values = (0..<elements).map { _ in Float16(Float.random(in: -1...1, using: &rng)) }
        var queryRNG = SplitMix64(seed: 7)
        let queries = (0..<(layout.layers * layout.qHeads * window * layout.headDim)).map { _ in
            Float.random(in: -1...1, using: &queryRNG)
        }
        observation = Observation(layers: layout.layers, qHeads: layout.qHeads, window: window, headDim: layout.headDim, queries: queries)
    }

    /// Bytes of all keys, and of one token's K and V in one head.
    var keyBytes: Int { layout.headCount * tokens * layout.tokenBytes }
    var tokenBytes: Int { layout.tokenBytes }

    /// A new sequence holding the whole cache; release it with `release`.
    func sequence() throws -> KVSequence {
        let seq = KVSequence(id: SequenceID(1), layout: layout, tenant: "bench")
        try keys.withUnsafeBytes { kb in
            try values.withUnsafeBytes { vb in
                _ = try seq.append(keys: kb, values: vb, tokens: tokens, allocator: allocator, memory: memory)
            }
        }
        return seq
    }

    func release(_ seq: KVSequence) { _ = seq.release(allocator: allocator) }
}
