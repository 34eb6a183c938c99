import CKVDKernels
import KVDCore

/// What a method may read about a sequence while planning: counts, positions, log-weights, and K/V
/// as f32 (converted from f16/bf16 storage on the way out). Read-only; the pages it reads do not
/// change while the plan is made (the sequence's queue runs one request at a time).
public struct SequenceView: Sendable {
    public let layout: ModelLayout
    /// Tokens held per (layer, head), layer-major.
    public let headCounts: [Int]
    /// Original positions per (layer, head), layer-major; built when a head is read (most methods
    /// never look, and a whole sequence's worth is megabytes).
    public let positions: PerHead<[Int32]>
    /// Log-weights per (layer, head), layer-major (zeros where none were set), built on access.
    public let logWeights: PerHead<[Float]>
    /// Whether head h has any log-weight other than 0.
    public let hasLogWeights: [Bool]
    /// Per layer: the owner layer it reads when KVSharer aliased it, nil when it holds its own cache.
    /// An aliased layer's heads are empty and stay so; budgets are spread over the other layers.
    public let aliases: [Int?]
    /// Per layer: its sliding attention window in tokens, 0 for full attention
    /// (`ModelLayout.layerWindows`). A sliding layer already holds only what its window needs, so
    /// compaction leaves it as it is: in a view made for compaction (`hidingSlidingLayers`) its
    /// heads show no tokens, budgets are spread over the full-attention layers only
    /// (`BudgetParams.budgetedHeads`), and the host keeps every token a sliding head holds
    /// whatever the plan says for it (`CompactionRunner`).
    public let windows: [Int]
    /// Whether sliding layers' heads are shown empty (views made for compaction).
    public let hidesSlidingLayers: Bool

    private enum Storage: Sendable {
        case pages(PageMemory, [[PageID]])
        case arrays(keys: [[Float]], values: [[Float]])
    }
    private let storage: Storage

    /// A view over a sequence's pages; `aliases` is the sequence's layer map (`KVSequence.aliases`).
    /// `hidingSlidingLayers` (what compaction uses): heads of sliding-window layers appear empty,
    /// so no method scores, budgets or plans them.
    public init(layout: ModelLayout, heads: [HeadCache], memory: PageMemory, aliases: [Int?], hidingSlidingLayers: Bool = false) {
        self.layout = layout
        let windows = (0..<layout.layers).map { layout.window(layer: $0) }
        let hidden = heads.indices.map { hidingSlidingLayers && windows[$0 / layout.kvHeads] > 0 }
        let heads = heads.indices.map { hidden[$0] ? HeadCache() : heads[$0] }
        self.windows = windows
        hidesSlidingLayers = hidingSlidingLayers && windows.contains { $0 > 0 }
        headCounts = heads.map(\.count)
        positions = PerHead(count: heads.count) { heads[$0].positions }
        logWeights = PerHead(count: heads.count) { heads[$0].logWeights }
        hasLogWeights = heads.map(\.hasLogWeights)
        precondition(aliases.count == layout.layers, "one alias entry per layer")
        self.aliases = aliases
        storage = .pages(memory, heads.map(\.pages))
    }

    /// A view over f32 arrays, `[count * head_dim]` per head (tests, tools). Heads of layers listed
    /// as aliased in `aliases` should be empty, as a sequence's are.
    public init(layout: ModelLayout, keys: [[Float]], values: [[Float]], positions: [[Int32]]? = nil, aliases: [Int?]? = nil) {
        self.layout = layout
        let aliases = aliases ?? Array(repeating: nil, count: layout.layers)
        precondition(aliases.count == layout.layers, "one alias entry per layer")
        self.aliases = aliases
        windows = (0..<layout.layers).map { layout.window(layer: $0) }
        hidesSlidingLayers = false
        headCounts = keys.map { $0.count / layout.headDim }
        let counts = headCounts
        self.positions = PerHead(count: counts.count) { positions?[$0] ?? Array(0..<Int32(counts[$0])) }
        logWeights = PerHead(count: counts.count) { [Float](repeating: 0, count: counts[$0]) }
        hasLogWeights = Array(repeating: false, count: counts.count)
        storage = .arrays(keys: keys, values: values)
    }

    /// Whether `layer` reads another layer's cache (KVSharer) instead of holding its own.
    @inline(__always) public func isAliased(layer: Int) -> Bool { aliases[layer] != nil }
    /// Whether head `h` (layer-major) belongs to an aliased layer.
    @inline(__always) public func isAliased(head h: Int) -> Bool { aliases[h / layout.kvHeads] != nil }

    /// Whether `layer` has a sliding attention window.
    @inline(__always) public func isSliding(layer: Int) -> Bool { windows[layer] > 0 }
    /// Whether head `h` (layer-major) belongs to a sliding-window layer.
    @inline(__always) public func isSliding(head h: Int) -> Bool { windows[h / layout.kvHeads] > 0 }
    /// Whether a budget given to head `h` can be spent: its layer holds its own cache (not
    /// aliased) and compaction applies to it (full attention).
    @inline(__always) public func isBudgeted(head h: Int) -> Bool { !isAliased(head: h) && !isSliding(head: h) }

    /// Keys of head `h` (layer-major index) as f32, `[count, head_dim]` row-major.
    public func keys(_ h: Int) -> [Float] { read(h, values: false) }
    /// Values of head `h` as f32, `[count, head_dim]` row-major.
    public func values(_ h: Int) -> [Float] { read(h, values: true) }

    private func read(_ h: Int, values: Bool) -> [Float] {
        if case .arrays(let k, let v) = storage { return values ? v[h] : k[h] }
        let n = headCounts[h] * layout.headDim
        // An empty head (e.g. an aliased layer's) is `[]`: Array(unsafeUninitializedCapacity: 0)
        // writes its count into the runtime's shared empty-array storage, which races when heads
        // are read on several threads (TSan).
        guard n > 0 else { return [] }
        return [Float](unsafeUninitializedCapacity: n) { out, initialized in
            read(h, values: values, into: out.baseAddress!)
            initialized = n
        }
    }

    /// Hands head `h`'s first `tokens` keys (or values) to `body` as stored, one page at a time:
    /// `body(rows, dtype, firstToken, count)`, rows `[count, head_dim]` of `dtype` (f32 for views
    /// over arrays). For one-pass scorers that read each key once with a dtype-aware kernel.
    public func forEachStoredPage(
        _ h: Int, values: Bool, tokens: Int, _ body: (UnsafeRawPointer, DType, Int, Int) -> Void
    ) {
        switch storage {
        case .arrays(let k, let v):
            (values ? v[h] : k[h]).withUnsafeBytes { body($0.baseAddress!, .f32, 0, tokens) }
        case .pages(let memory, let pages):
            var t = 0
            let list = pages[h]
            for (i, page) in list.enumerated() where t < tokens {
                let count = min(layout.pageTokens, tokens - t)
                prefetch(next: i + 1, of: list, values: values, memory)
                body(values ? memory.value(page, slot: 0, layout) : memory.key(page, slot: 0, layout), layout.dtype, t, count)
                t += count
            }
        }
    }

    /// Writes head `h`'s keys (or values) as f32 `[count, head_dim]` into `out`, which must hold
    /// `headCounts[h] * head_dim` floats: lets hot loops reuse one buffer across heads.
    public func read(_ h: Int, values: Bool, into out: UnsafeMutablePointer<Float>) {
        let n = headCounts[h]
        let d = layout.headDim
        switch storage {
        case .arrays(let k, let v):
            (values ? v[h] : k[h]).withUnsafeBufferPointer { out.update(from: $0.baseAddress!, count: n * d) }
        case .pages(let memory, let pages):
            var t = 0
            let list = pages[h]
            for (i, page) in list.enumerated() where t < n {
                let count = min(layout.pageTokens, n - t)
                let src = values ? memory.value(page, slot: 0, layout) : memory.key(page, slot: 0, layout)
                prefetch(next: i + 1, of: list, values: values, memory)
                convertToF32(src, layout.dtype, out + t * d, count * d)
                t += count
            }
        }
    }
}

extension SequenceView {
    /// Prefetches the K (or V) block of page `next` of `list`, if any: the blocks of one head are a
    /// page apart, which hardware prefetchers do not follow.
    @inline(__always) fileprivate func prefetch(next: Int, of list: [PageID], values: Bool, _ memory: PageMemory) {
        let next = next + 1
        guard next < list.count else { return }
        let p = values ? memory.value(list[next], slot: 0, layout) : memory.key(list[next], slot: 0, layout)
        kvd_prefetch(p, min(512, layout.pageTokens * layout.tokenBytes))
    }
}

/// One value per (layer, head), computed when read.
public struct PerHead<Element>: RandomAccessCollection, Sendable {
    public let count: Int
    private let make: @Sendable (Int) -> Element
    public init(count: Int, _ make: @escaping @Sendable (Int) -> Element) {
        self.count = count
        self.make = make
    }
    public var startIndex: Int { 0 }
    public var endIndex: Int { count }
    public subscript(h: Int) -> Element { make(h) }
}

/// Converts `count` elements of `dtype` at `src` to f32 at `dst`.
public func convertToF32(_ src: UnsafeRawPointer, _ dtype: DType, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
    switch dtype {
    case .f32: dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .f16: kvd_f16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
    case .bf16: kvd_bf16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
    }
}
