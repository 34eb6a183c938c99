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
}
