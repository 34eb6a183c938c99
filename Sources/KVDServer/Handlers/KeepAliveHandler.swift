import KVDCore
import KVDProtocol

/// KeepAlive: the dispatcher already renewed the connection's lease (every request does); this
/// adopts the listed sequences, which then belong to this connection.
enum KeepAliveHandler {
    static func handle(_ r: Kvd_V1_KeepAliveRequest, _ store: TenantStore) throws(KVDError) -> Kvd_V1_KeepAliveResponse {
        let limit = 65536
        guard r.sequenceIds.count <= limit else {
            throw .invalidArgument("keep_alive: \(r.sequenceIds.count) sequence_ids; list at most \(limit) per request")
        }
        var out = Kvd_V1_KeepAliveResponse()
        out.leaseMs = UInt64(store.memory.leaseSeconds * 1000)
        for id in r.sequenceIds {
            guard id != 0, let e = try? store.entry(id) else {
                out.missing.append(id)
                continue
            }
            e.lease.touch(by: store.connectionNumber, now: store.now)
            out.adopted += 1
        }
        return out
    }
}
