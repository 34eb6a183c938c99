/// Reads the `memory:` section (the memory manager) and checks that its policies exist.
enum MemoryLoader {
    static let keys = [
        "lease_seconds", "orphan_grace_seconds", "high", "low", "compress_policy", "fallback_policy", "floor_tokens",
        "busy_ms", "evict", "keep_queries_bytes", "interval_ms", "reclaim_wait_ms", "events_endpoint",
    ]

    static func memory(_ node: KeyedNode) throws(ConfigError) -> Configuration.Memory {
        let m = try node.mapping(known: keys)
        var c = Configuration.Memory()
        if let v = m["lease_seconds"] { c.leaseSeconds = try v.double(min: 0, max: 86_400 * 7) }
        if let v = m["orphan_grace_seconds"] { c.orphanGraceSeconds = try v.double(min: 0, max: 86_400 * 30) }
        if let v = m["high"] { c.high = try v.double(min: 0.01, max: 1) }
        if let v = m["low"] { c.low = try v.double(min: 0, max: 1) }
        guard c.low < c.high else {
            throw (m["low"] ?? m["high"] ?? node).fail("low (\(c.low)) must be below high (\(c.high))")
        }
        if let v = m["compress_policy"] { c.compressPolicy = try v.string() }
        if let v = m["fallback_policy"] { c.fallbackPolicy = try v.string() }
        if let v = m["floor_tokens"] { c.floorTokens = try v.int(min: 0, max: Int(Int32.max)) }
        if let v = m["busy_ms"] { c.busyMilliseconds = try v.int(min: 0, max: 3_600_000) }
        if let v = m["evict"] { c.evict = try v.bool() }
        if let v = m["keep_queries_bytes"] { c.keepQueriesBytes = try v.bytes(min: 0) }
        if let v = m["interval_ms"] { c.intervalMilliseconds = try v.int(min: 1, max: 60_000) }
        if let v = m["reclaim_wait_ms"] { c.reclaimWaitMilliseconds = try v.int(min: 0, max: 60_000) }
        if let v = m["events_endpoint"] {
            let ep = try v.string()
            guard ep.isEmpty || ep.hasPrefix("ipc://") || ep.hasPrefix("tcp://") else {
                throw v.fail("must be empty (off) or start with ipc:// or tcp://, got '\(ep)'")
            }
            c.eventsEndpoint = ep
        }
        return c
    }

    /// The pressure policies must be defined, and the fallback must not need queries (checked when
    /// the policy book is built, which knows the methods).
    static func checkPolicies(_ c: Configuration, file: String) throws(ConfigError) {
        let names = Set(c.policies.map(\.name))
        // The bundled names are optional: without a `pressure` policy the manager uses streamingllm's
        // defaults (see PressurePolicy in the server).
        for (key, name) in [("memory.compress_policy", c.memory.compressPolicy), ("memory.fallback_policy", c.memory.fallbackPolicy),
                            ("remote.offload_policy", c.remote.offloadPolicy)]
        where !name.isEmpty && name != "pressure" && !names.contains(name) {
            throw ConfigError("\(file): \(key): policy '\(name)' is not defined under policies")
        }
    }
}
