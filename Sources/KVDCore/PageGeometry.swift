/// Where pages and their token slots are inside the arena, in bytes from the segment start.
/// Pure arithmetic shared by the arena, the sequence bookkeeping and the slot lists sent to clients.
public struct PageGeometry: Sendable, Equatable {
    /// Byte offset of page 0.
    public let pagesOffset: Int
    /// Stride between pages (≥ every model's `pageBytesUsed`).
    public let pageBytes: Int
    public let pageCount: Int

    public init(pagesOffset: Int, pageBytes: Int, pageCount: Int) {
        self.pagesOffset = pagesOffset
        self.pageBytes = pageBytes
        self.pageCount = pageCount
    }

    @inline(__always) public func pageOffset(_ page: PageID) -> Int {
        pagesOffset + Int(page.raw) * pageBytes
    }

    /// Offset of the key of token `slot` in `page` for a model with `layout`.
    @inline(__always) public func keyOffset(_ page: PageID, slot: Int, _ layout: ModelLayout) -> Int {
        pageOffset(page) + slot * layout.tokenBytes
    }

    /// Offset of the value of token `slot`: the V block follows the P-token K block.
    @inline(__always) public func valueOffset(_ page: PageID, slot: Int, _ layout: ModelLayout) -> Int {
        pageOffset(page) + (layout.pageTokens + slot) * layout.tokenBytes
    }
}
