/// Reads the `durability:` section (crash safety, docs/DURABILITY.md).
enum DurabilityLoader {
    static func durability(_ node: KeyedNode) throws(ConfigError) -> Configuration.Durability {
        let m = try node.mapping(known: ["enabled", "directory", "checkpoint_bytes", "keep_on_exit"])
        var d = Configuration.Durability()
        if let v = m["enabled"] { d.enabled = try v.bool() }
        if let v = m["directory"] {
            let dir = try v.string()
            guard !dir.isEmpty else { throw v.fail("must name a directory for the journal files (e.g. /dev/shm)") }
            d.directory = dir
        }
        if let v = m["checkpoint_bytes"] { d.checkpointBytes = try v.bytes(min: 4096) }
        if let v = m["keep_on_exit"] { d.keepOnExit = try v.bool() }
        return d
    }
}
