/// Reads the `remote:` section (the Redis tier, docs/REMOTE.md).
enum RemoteLoader {
    static func remote(_ node: KeyedNode) throws(ConfigError) -> Configuration.Remote {
        let m = try node.mapping(known: [
            "enabled", "mode", "nodes", "key_prefix", "block_key_prefix", "ttl_seconds", "connect_timeout_ms", "command_timeout_ms",
            "offload_evicted", "offload_policy", "share_prefixes", "queue_bytes",
        ])
        var r = Configuration.Remote()
        if let v = m["enabled"] { r.enabled = try v.bool() }
        if let v = m["mode"] {
            let s = try v.string()
            guard let mode = Configuration.Remote.Mode(rawValue: s) else { throw v.fail("must be \"single\" or \"cluster\", got '\(s)'") }
            r.mode = mode
        }
        if let v = m["nodes"] {
            var nodes: [String] = []
            for item in try v.sequence() {
                let s = try item.string()
                guard let colon = s.lastIndex(of: ":"), !s[..<colon].isEmpty, let port = Int(s[s.index(after: colon)...]),
                      (1...65535).contains(port) else {
                    throw item.fail("must be host:port (e.g. 127.0.0.1:6379), got '\(s)'")
                }
                nodes.append(s)
            }
            guard !nodes.isEmpty else { throw v.fail("must list at least one host:port") }
            r.nodes = nodes
        }
        if let v = m["key_prefix"] { r.keyPrefix = try keyPrefix(v) }
        if let v = m["block_key_prefix"] { r.blockKeyPrefix = try keyPrefix(v) }
        if let v = m["ttl_seconds"] { r.ttlSeconds = try v.int(min: 0, max: 86_400 * 365) }
        if let v = m["connect_timeout_ms"] { r.connectTimeoutMilliseconds = try v.int(min: 1, max: 60_000) }
        if let v = m["command_timeout_ms"] { r.commandTimeoutMilliseconds = try v.int(min: 1, max: 600_000) }
        if let v = m["offload_evicted"] { r.offloadEvicted = try v.bool() }
        if let v = m["share_prefixes"] { r.sharePrefixes = try v.bool() }
        if let v = m["offload_policy"] { r.offloadPolicy = try v.string() }
        if let v = m["queue_bytes"] { r.queueBytes = try v.bytes(min: 0) }
        return r
    }

    private static func keyPrefix(_ v: KeyedNode) throws(ConfigError) -> String {
        let s = try v.string()
        guard s.utf8.count <= 64, !s.contains("{"), !s.contains("}") else {
            throw v.fail("must be at most 64 bytes without { or } (braces are Redis Cluster hash tags)")
        }
        return s
    }
}
