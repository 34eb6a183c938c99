import KVDCore
import KVDProtocol

/// Stage: the sequence's staging buffer, grown to at least `bytes`, for data the client places in
/// shared memory (observation queries). The same buffer Query GATHER fills; freed by Release.
enum StageHandler {
    static func handle(_ r: Kvd_V1_StageRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> Kvd_V1_StageResponse {
        guard r.bytes >= 1 else { throw .invalidArgument("stage: bytes must be at least 1") }
        guard r.bytes <= UInt64(store.staging.capacity) else {
            throw .resourceExhausted("stage: \(r.bytes) bytes is more than the whole staging area (\(store.staging.capacity)); raise arena.staging_bytes")
        }
        let range = try entry.stagingBuffer(bytes: Int(r.bytes), store.staging)
        var out = Kvd_V1_StageResponse()
        out.offset = UInt64(store.arena.sizing.stagingOffset + range.lowerBound)
        out.bytes = UInt64(range.count)
        return out
    }
}
