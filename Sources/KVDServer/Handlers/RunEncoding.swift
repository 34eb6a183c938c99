import KVDCore
import KVDProtocol

/// Reserve's `Slot` and Query's `PageRef` say the same thing — a run of tokens inside one page and
/// where its K and V start — so both are filled by one function.
protocol RunMessage {
    init()
    var page: UInt32 { get set }
    var keyOffset: UInt64 { get set }
    var valueOffset: UInt64 { get set }
    var count: UInt32 { get set }
}

extension Kvd_V1_Slot: RunMessage {}
extension Kvd_V1_PageRef: RunMessage {}

func encodeRuns<Message: RunMessage>(_ runs: [TokenRun], _ g: PageGeometry, _ m: ModelLayout) -> [Message] {
    runs.map { run in
        var out = Message()
        out.page = run.page.raw
        out.keyOffset = UInt64(g.keyOffset(run.page, slot: run.slot, m))
        out.valueOffset = UInt64(g.valueOffset(run.page, slot: run.slot, m))
        out.count = UInt32(run.count)
        return out
    }
}
