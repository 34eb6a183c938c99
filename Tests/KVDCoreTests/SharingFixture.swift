import KVDCore

/// Arena stand-in for sharing tests: ordinary memory through the real `PageMemory`, and K/V
/// contents that name their token. Each appended token gets a unique tag; its K and V bit patterns
/// are derived from (tag, head, dim), so reading a head back as tags shows exactly which token sits
/// where, and a byte changed by another sequence shows up as a wrong or unknown tag.
final class SharingFixture {
    /// 2 layers × 2 KV heads, 2 dims of f32, 3 tokens per page: small enough to cross pages often.
    static let layout = ModelLayout(name: "t", layers: 2, kvHeads: 2, qHeads: 4, headDim: 2, dtype: .f32, pageTokens: 3, defaultMethod: "x")
    var layout: ModelLayout { Self.layout }

    let buffer: UnsafeMutableRawPointer
    let memory: PageMemory
    let allocator: PageAllocator
    private var nextTag: UInt32 = 1

    init(pages: Int) {
        let g = PageGeometry(pagesOffset: 64, pageBytes: Self.layout.pageBytesUsed, pageCount: pages)
        buffer = .allocate(byteCount: 64 + pages * g.pageBytes, alignment: 64)
        // A recognisable pattern in never-written slots, so reading one is not mistaken for a token.
        buffer.initializeMemory(as: UInt8.self, repeating: 0xEE, count: 64 + pages * g.pageBytes)
        memory = PageMemory(base: buffer, geometry: g)
        allocator = PageAllocator(pageCount: pages)
    }
    deinit { buffer.deallocate() }

    static func keyBits(tag: UInt32, head: Int, dim: Int) -> UInt32 { tag &* 1024 &+ UInt32(head * 8 + dim) }
    static func valueBits(tag: UInt32, head: Int, dim: Int) -> UInt32 { ~keyBits(tag: tag, head: head, dim: dim) }

    /// Appends `n` fresh tokens to `s` and returns their tags (the same tags in every head).
    @discardableResult
    func append(_ s: KVSequence, _ n: Int) throws(KVDError) -> [UInt32] {
        let tags = (0..<UInt32(n)).map { nextTag + $0 }
        try Self.append(s, tags: tags, allocator: allocator, memory: memory)
        nextTag += UInt32(n)
        return tags
    }

    /// Appends one token per tag (tags below 2^22, so `keyBits` does not wrap). Static so that
    /// threads of a concurrent test can use it with their own tag ranges.
    static func append(_ s: KVSequence, tags: [UInt32], allocator: PageAllocator, memory: PageMemory) throws(KVDError) {
        var keys: [UInt32] = []
        var values: [UInt32] = []
        for h in 0..<layout.headCount {
            for t in tags {
                for d in 0..<layout.headDim {
                    keys.append(keyBits(tag: t, head: h, dim: d))
                    values.append(valueBits(tag: t, head: h, dim: d))
                }
            }
        }
        let result: Result<Void, KVDError> = keys.withUnsafeBytes { kb in
            values.withUnsafeBytes { vb in
                Result { () throws(KVDError) in
                    _ = try s.append(keys: kb, values: vb, tokens: tags.count, allocator: allocator, memory: memory)
                }
            }
        }
        try result.get()
    }

    func tags(_ s: KVSequence, head h: Int) -> [UInt32] { Self.tags(s, head: h, memory: memory) }

    /// Head `h`'s tokens as tags, read through its page table; 0 for a slot whose K and V are not
    /// one consistent token of this head.
    static func tags(_ s: KVSequence, head h: Int, memory: PageMemory) -> [UInt32] {
        let head = s.heads[h]
        return (0..<head.count).map { t in
            let page = head.pages[t / layout.pageTokens]
            let slot = t % layout.pageTokens
            let k0 = memory.key(page, slot: slot, layout).load(as: UInt32.self)
            let tag = (k0 &- UInt32(h * 8)) / 1024
            for d in 0..<layout.headDim {
                let k = memory.key(page, slot: slot, layout).load(fromByteOffset: d * 4, as: UInt32.self)
                let v = memory.value(page, slot: slot, layout).load(fromByteOffset: d * 4, as: UInt32.self)
                if k != keyBits(tag: tag, head: h, dim: d) || v != valueBits(tag: tag, head: h, dim: d) { return 0 }
            }
            return tag
        }
    }

    /// Every head's tags.
    func allTags(_ s: KVSequence) -> [[UInt32]] { (0..<layout.headCount).map { tags(s, head: $0) } }

    /// A plan keeping the same token indices in every head.
    func plan(keeping kept: [Int32]) -> CompactionPlan {
        CompactionPlan(kept: Array(repeating: kept, count: layout.headCount))
    }
}
