import KVDCore
import KVDPluginAPI
import KVDProtocol

/// Hello: picks the protocol version and tells the client how to map the arena.
enum HelloHandler {
    static func handle(_ r: Kvd_V1_HelloRequest, _ store: TenantStore) throws(KVDError) -> Kvd_V1_HelloResponse {
        let offered = r.protocolVersions.isEmpty ? [1] : r.protocolVersions
        guard let chosen = offered.filter(ProtocolVersion.supported.contains).max() else {
            throw .unimplemented(
                "no common protocol version: client speaks \(offered.map(String.init).joined(separator: ", ")), "
                    + "server speaks \(ProtocolVersion.supported.map(String.init).joined(separator: ", "))")
        }
        var out = Kvd_V1_HelloResponse()
        out.protocolVersion = chosen
        out.supportedProtocolVersions = ProtocolVersion.supported
        out.serverVersion = KVDVersion.string
        let a = store.arena
        out.shm.name = a.name
        out.shm.sizeBytes = UInt64(a.sizing.segmentBytes)
        out.shm.pageBytes = UInt64(a.sizing.pageBytes)
        out.shm.pageCount = UInt32(a.sizing.pageCount)
        out.shm.pagesOffset = UInt64(a.sizing.pagesOffset)
        out.shm.stagingOffset = UInt64(a.sizing.stagingOffset)
        out.shm.stagingBytes = UInt64(a.sizing.stagingBytes)
        out.shm.layoutVersion = 1
        out.shm.arenaGeneration = a.generation
        out.models = store.config.models.map(Kvd_V1_ModelLayout.init)
        let book = store.policies
        out.methods = book.registry.descriptors.map { d in
            var info = methodInfo(d)
            info.needsQueries = (try? book.registry.method(named: d.name).needsQueries) ?? false
            info.origin = book.registry.origins[d.name] ?? "builtin"
            return info
        }
        out.policies = ListPoliciesHandler.policyInfos(book)
        out.limits.maxMessageBytes = UInt64(store.config.server.maxMessageBytes)
        out.limits.maxTokensPerAppend = UInt32(store.config.server.maxTokensPerAppend)
        out.limits.maxSequences = UInt32(store.config.server.maxSequences)
        out.limits.quotaPages = UInt32(clamping: store.space.tenant.maxPages)
        out.limits.quotaSequences = UInt32(clamping: store.space.tenant.maxSequences)
        out.tenant = store.space.name
        out.limits.maxSequenceTokens = UInt64(min(store.config.server.maxSequenceTokens, KVSequence.maxLength))
        let memory = store.memory
        out.limits.leaseMs = UInt64(memory.leaseSeconds * 1000)
        out.limits.orphanGraceMs = UInt64(memory.orphanGraceSeconds * 1000)
        out.limits.quotaPinnedPages = UInt32(clamping: store.space.tenant.maxPinnedPages)
        out.eventsEndpoint = store.shared.events?.endpoint ?? ""
        out.instanceID = store.shared.instanceID
        out.durable = store.space.journal?.isDurable ?? false
        out.admin = store.isAdmin
        if store.isAdmin { out.tenants = store.shared.spaces.map(\.name) }
        return out
    }

    private static func methodInfo(_ d: MethodDescriptor) -> Kvd_V1_MethodInfo {
        var m = Kvd_V1_MethodInfo()
        m.name = d.name
        m.description_p = d.description
        m.params = d.params.map { p in
            var i = Kvd_V1_ParamInfo()
            i.name = p.name
            i.type = p.type.rawValue
            i.defaultValue = p.defaultValue.description
            i.minValue = p.min.map(format) ?? ""
            i.maxValue = p.max.map(format) ?? ""
            i.description_p = p.description
            return i
        }
        return m
    }
}
