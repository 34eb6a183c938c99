import KVDProtocol

/// Keeps fuzz inputs from legitimately changing the victim sequence, so any change the harness
/// sees afterwards is a bug (a write through another sequence's pages, a free of its pages, ...).
/// Requests that may change it — or its staging buffer, which the arena-wide staging check counts —
/// are redirected to the playground; reads (PAGES, INLINE, METADATA queries, Stats, RankLayers)
/// reach it unchanged.
enum VictimGuard {
    /// Retargets `request` when it would change `victim`; true when it did.
    static func redirect(_ request: inout Kvd_V1_Request, victim: UInt64, to playground: UInt64) -> Bool {
        func moved<T>(_ message: T, _ id: WritableKeyPath<T, UInt64>) -> T? {
            guard message[keyPath: id] == victim else { return nil }
            var m = message
            m[keyPath: id] = playground
            return m
        }
        let body: Kvd_V1_Request.OneOf_Body?
        switch request.body {
        case .append(let r): body = moved(r, \.sequenceID).map { .append($0) }
        case .reserve(let r): body = moved(r, \.sequenceID).map { .reserve($0) }
        case .commit(let r): body = moved(r, \.sequenceID).map { .commit($0) }
        case .compact(let r): body = moved(r, \.sequenceID).map { .compact($0) }
        case .release(let r): body = moved(r, \.sequenceID).map { .release($0) }
        case .evict(let r): body = moved(r, \.sequenceID).map { .evict($0) }
        case .stage(let r): body = moved(r, \.sequenceID).map { .stage($0) }
        // GATHER copies into the sequence's staging buffer (allocating it): a change of arena state.
        case .query(let r) where r.mode == .gather: body = moved(r, \.sequenceID).map { .query($0) }
        default: body = nil
        }
        guard let body else { return false }
        request.body = body
        return true
    }
}
