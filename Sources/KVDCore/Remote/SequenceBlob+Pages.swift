extension SequenceBlob {
    /// The encoded blob of `seq`, its K/V read straight out of its pages into the blob (one copy;
    /// call on the sequence's queue): what an offload ships.
    /// `buffer`: memory to write into (a shipped blob's, whose pages are mapped already).
    public static func encode(capturing seq: KVSequence, memory: PageMemory, reusing buffer: [UInt8] = []) -> [UInt8] {
        let layout = seq.layout
        var image = seq.image(pinned: false)
        for h in image.heads.indices { image.heads[h].pages = [] }
        return encode(layout: layout, image: image, reusing: buffer) { h, w in
            let head = seq.heads[h]
            let runs = HeadCache.runs(pages: head.pages, start: 0, count: head.count, pageTokens: layout.pageTokens)
            for run in runs { w.raw(UnsafeRawBufferPointer(start: memory.key(run.page, slot: run.slot, layout), count: run.count * layout.tokenBytes)) }
            for run in runs { w.raw(UnsafeRawBufferPointer(start: memory.value(run.page, slot: run.slot, layout), count: run.count * layout.tokenBytes)) }
        }
    }

    /// A copy of `seq`'s K/V and bookkeeping, read out of its pages (call on the sequence's queue).
    public init(capturing seq: KVSequence, memory: PageMemory) {
        let layout = seq.layout
        var keys: [[UInt8]] = []
        var values: [[UInt8]] = []
        for head in seq.heads {
            var k = [UInt8](repeating: 0, count: head.count * layout.tokenBytes)
            var v = k
            var at = 0
            for run in HeadCache.runs(pages: head.pages, start: 0, count: head.count, pageTokens: layout.pageTokens) {
                let n = run.count * layout.tokenBytes
                k.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: at).copyMemory(from: memory.key(run.page, slot: run.slot, layout), byteCount: n) }
                v.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: at).copyMemory(from: memory.value(run.page, slot: run.slot, layout), byteCount: n) }
                at += n
            }
            keys.append(k)
            values.append(v)
        }
        var image = seq.image(pinned: false)
        for h in image.heads.indices { image.heads[h].pages = [] }
        self.init(layout: layout, image: image, keys: keys, values: values)
    }

    /// A new sequence `id` holding this blob's tokens in fresh pages (all taken at once, or none:
    /// RESOURCE_EXHAUSTED changes nothing). For a blob already in memory (taken from the offload
    /// queue); one from the store is written into pages while it arrives (`Arrival`).
    public func restore(id: SequenceID, tenant: String, allocator: PageAllocator, memory: PageMemory) throws(KVDError) -> KVSequence {
        let pageTokens = layout.pageTokens
        let need = image.heads.map { HeadCache.pagesNeeded($0.count, pageTokens: pageTokens) }
        var fresh = try allocator.allocate(need.reduce(0, +))[...]
        var restored = image
        restored.id = id.raw
        for h in restored.heads.indices {
            let pages = Array(fresh.prefix(need[h]))
            fresh = fresh.dropFirst(need[h])
            restored.heads[h].pages = pages
            withHead(h) { k, v in
                var at = 0
                for run in HeadCache.runs(pages: pages, start: 0, count: image.heads[h].count, pageTokens: pageTokens) {
                    let n = run.count * layout.tokenBytes
                    memory.key(run.page, slot: run.slot, layout).copyMemory(from: k.baseAddress! + at, byteCount: n)
                    memory.value(run.page, slot: run.slot, layout).copyMemory(from: v.baseAddress! + at, byteCount: n)
                    at += n
                }
            }
        }
        return KVSequence(restoring: restored, layout: layout, tenant: tenant)
    }
}
