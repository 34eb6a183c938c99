/// The arena's bytes as the bookkeeping code sees them: a base address plus page geometry.
/// The shared-memory target creates it over the mapped segment; tests create it over ordinary memory.
/// Unchecked Sendable: the pointer is shared, but each page is written only by the one request that
/// owns its sequence at the time (see `Sequence`).
public struct PageMemory: @unchecked Sendable {  // safe: each page is written only by its sequence's queue
    public let base: UnsafeMutableRawPointer
    public let geometry: PageGeometry

    public init(base: UnsafeMutableRawPointer, geometry: PageGeometry) {
        self.base = base
        self.geometry = geometry
    }

    @inline(__always) public func key(_ page: PageID, slot: Int, _ layout: ModelLayout) -> UnsafeMutableRawPointer {
        base + geometry.keyOffset(page, slot: slot, layout)
    }

    @inline(__always) public func value(_ page: PageID, slot: Int, _ layout: ModelLayout) -> UnsafeMutableRawPointer {
        base + geometry.valueOffset(page, slot: slot, layout)
    }

    /// Copies `count` tokens' K and V from `source` at `sourceSlot` to `destination` at
    /// `destinationSlot`. Both runs must stay inside their page; they may overlap (memmove), which
    /// in-place packing inside one page relies on.
    public func copyTokens(
        from source: PageID, slot sourceSlot: Int, to destination: PageID, slot destinationSlot: Int,
        count: Int, _ layout: ModelLayout
    ) {
        precondition(count >= 0 && sourceSlot + count <= layout.pageTokens && destinationSlot + count <= layout.pageTokens)
        let n = count * layout.tokenBytes
        key(destination, slot: destinationSlot, layout).copyMemory(from: key(source, slot: sourceSlot, layout), byteCount: n)
        value(destination, slot: destinationSlot, layout).copyMemory(from: value(source, slot: sourceSlot, layout), byteCount: n)
    }
}
