import ArgumentParser
import KVDProtocol

/// `kvctl status`: who the daemon is and how full the tenant's segment is (Hello + Stats).
struct Status: Verb {
    static let configuration = CommandConfiguration(abstract: "Version, models, tenant, arena pages, sequences, memory manager, remote tier, durability.")
    @OptionGroup var global: GlobalOptions

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        guard case .stats(let s) = try session.call(.stats(Kvd_V1_StatsRequest())) else { throw unexpectedReply("stats") }
        let h = session.hello
        let used = s.totalPages >= s.freePages ? s.totalPages - s.freePages : 0
        let m = s.memory, r = s.remote, p = s.prefix
        let models = Table(["model", "layers", "kv_heads", "q_heads", "head_dim", "dtype", "page_tokens", "default_method"]).with(h.models.map { x in
            [x.name, "\(x.layers)", "\(x.kvHeads)", "\(x.qHeads)", "\(x.headDim)", x.dtype.shortName, "\(x.pageTokens)", x.defaultMethod]
        })
        let text = keyValues([
            ("endpoint", session.connection.endpoint),
            ("server", "kvd \(h.serverVersion), protocol \(h.protocolVersion), instance \(h.instanceID)"),
            ("tenant", h.tenant + (h.admin ? " (admin; tenants: \(h.tenants.joined(separator: ", ")))" : "")),
            ("shm", "\(h.shm.name), generation \(h.shm.arenaGeneration)"),
            ("durable", h.durable ? "yes" : "no"),
            ("pages", "\(used) used, \(s.freePages) free of \(s.totalPages) (\(percent(used, s.totalPages))), \(s.pageBytes) bytes each"),
            ("staging", "\(s.stagingUsedBytes) of \(s.stagingBytes) bytes"),
            ("sequences", "\(s.sequences)"),
            ("requests", "\(s.requests) (\(s.errors) errors)"),
            ("memory", "high \(m.high), low \(m.low); \(m.compactions) compactions (\(m.compactionsPages) pages), \(m.evictions) evictions (\(m.evictionsPages) pages), \(m.orphans) orphans, \(m.pinnedSequences) pinned (\(m.pinnedPages) pages)"),
            ("prefix", "\(p.cachedBlocks) cached blocks, \(p.hits) hits, \(p.misses) misses"),
            ("remote", r.enabled ? "on: \(r.offloaded) offloaded, \(r.restored) restored, \(r.queued) queued, \(r.offloadFailures) failures" : "off"),
            ("events", h.eventsEndpoint.isEmpty ? "off" : h.eventsEndpoint),
        ]) + "\n\n" + models.render()
        let json: JSONValue = .object([
            "endpoint": j(session.connection.endpoint),
            "server_version": j(h.serverVersion),
            "protocol_version": j(h.protocolVersion),
            "instance_id": j(h.instanceID),
            "tenant": j(h.tenant),
            "admin": j(h.admin),
            "tenants": .array(h.tenants.map { j($0) }),
            "durable": j(h.durable),
            "shm": j(h.shm.name),
            "arena_generation": j(h.shm.arenaGeneration),
            "events_endpoint": j(h.eventsEndpoint),
            "models": .array(h.models.map { x in
                .object(["name": j(x.name), "layers": j(x.layers), "kv_heads": j(x.kvHeads), "q_heads": j(x.qHeads), "head_dim": j(x.headDim),
                         "dtype": j(x.dtype.shortName), "page_tokens": j(x.pageTokens), "default_method": j(x.defaultMethod)])
            }),
            "pages": .object(["total": j(s.totalPages), "free": j(s.freePages), "used": j(used), "page_bytes": j(s.pageBytes)]),
            "staging": .object(["bytes": j(s.stagingBytes), "used_bytes": j(s.stagingUsedBytes)]),
            "sequences": j(s.sequences),
            "requests": j(s.requests),
            "errors": j(s.errors),
            "memory": .object([
                "high": j(m.high), "low": j(m.low), "compactions": j(m.compactions), "compactions_pages": j(m.compactionsPages),
                "evictions": j(m.evictions), "evictions_pages": j(m.evictionsPages), "orphans": j(m.orphans),
                "orphans_released": j(m.orphansReleased), "pinned_sequences": j(m.pinnedSequences), "pinned_pages": j(m.pinnedPages),
                "reclaim_passes": j(m.reclaimPasses), "events_published": j(m.eventsPublished),
            ]),
            "prefix": .object(["cached_blocks": j(p.cachedBlocks), "hits": j(p.hits), "misses": j(p.misses)]),
            "remote": .object([
                "enabled": j(r.enabled), "offloaded": j(r.offloaded), "restored": j(r.restored), "queued": j(r.queued),
                "offload_failures": j(r.offloadFailures), "restore_failures": j(r.restoreFailures),
            ]),
        ])
        return (text, json)
    }
}

func percent<T: BinaryInteger>(_ part: T, _ whole: T) -> String {
    whole == 0 ? "0%" : "\(Int((Double(part) * 100 / Double(whole)).rounded()))%"
}

func unexpectedReply(_ kind: String) -> Failure {
    .reply(code: .internal, message: "kvd: answered \(kind) with another kind of reply")
}

extension Table {
    func with(_ rows: [[String]]) -> Table {
        var t = self
        for r in rows { t.add(r) }
        return t
    }
}

extension Kvd_V1_DType {
    var shortName: String {
        switch self {
        case .f16: "f16"
        case .bf16: "bf16"
        case .f32: "f32"
        default: "\(self)"
        }
    }
}
