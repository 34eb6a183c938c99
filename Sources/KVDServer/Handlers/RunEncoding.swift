import KVDCore
import KVDProtocol

/// What Reserve's `Slot` and Query's `PageRef` say about a run of tokens inside one page: the page,
/// where its K and V start (bytes from the segment start) and how many tokens. Computed here only;
/// Reserve fills a SwiftProtobuf `Slot` from it, Query writes a `PageRef` by hand.
struct RunLocation {
    let page: UInt32
    let keyOffset: UInt64
    let valueOffset: UInt64
    let count: UInt32

    init(_ run: TokenRun, _ g: PageGeometry, _ m: ModelLayout) {
        page = run.page.raw
        keyOffset = UInt64(g.keyOffset(run.page, slot: run.slot, m))
        valueOffset = UInt64(g.valueOffset(run.page, slot: run.slot, m))
        count = UInt32(run.count)
    }

    /// As (field number, value) of `Slot` / `PageRef`, which number their fields alike.
    var fields: [(Int, UInt64)] { [(1, UInt64(page)), (2, keyOffset), (3, valueOffset), (4, UInt64(count))] }
}

extension Kvd_V1_Slot {
    init(_ location: RunLocation) {
        self.init()
        page = location.page
        keyOffset = location.keyOffset
        valueOffset = location.valueOffset
        count = location.count
    }
}
