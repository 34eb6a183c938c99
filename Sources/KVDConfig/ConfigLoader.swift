import Foundation
import KVDCore
import Yams

/// Reads a configuration file strictly: unknown keys, wrong types and missing model fields are errors
/// that name the key and line, never silently defaulted.
public enum ConfigLoader {
    public static func load(path: String) throws(ConfigError) -> Configuration {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError("\(path): cannot read the configuration file: \(error.localizedDescription)")
        }
        var config = try parse(text, file: path)
        let base = URL(fileURLWithPath: path).deletingLastPathComponent().standardizedFileURL.path
        config.baseDirectory = base
        // Relative file names in the config mean "next to the config file".
        func absolute(_ p: String) -> String { p.hasPrefix("/") ? p : URL(fileURLWithPath: p, relativeTo: URL(fileURLWithPath: base + "/")).standardizedFileURL.path }
        config.fileDirectories = config.fileDirectories.isEmpty ? [base] : config.fileDirectories.map(absolute)
        config.server.curveSecretKeyFile = config.server.curveSecretKeyFile.map(absolute)
        if !config.durability.directory.hasPrefix("/") { config.durability.directory = absolute(config.durability.directory) }
        if let keyFile = config.prefix.keyFile {
            config.prefix.keyFile = absolute(keyFile)
            config.prefix.key = try PrefixLoader.readKey(absolute(keyFile), file: path)
        }
        // Block hashes only match across daemons that hash with the same key.
        if config.remote.enabled, config.remote.sharePrefixes, config.prefix.key == nil || !config.prefix.enabled {
            throw ConfigError("\(path): remote.share_prefixes needs prefix.enabled and a prefix.key_file (the same key on every daemon sharing the Redis), or block hashes would never match")
        }
        for i in config.tenants.indices {
            if let file = config.tenants[i].tokenFile {
                config.tenants[i].token = try TenantLoader.readToken(absolute(file), tenant: config.tenants[i].name, file: path)
            }
        }
        if let file = config.admin.tokenFile {
            config.admin.token = try AdminLoader.readToken(absolute(file), file: path)
        }
        if let token = config.admin.token, config.effectiveTenants.contains(where: { $0.token == token }) {
            throw ConfigError("\(path): admin token is also a tenant's token; give the admin its own")
        }
        return config
    }

    public static func parse(_ text: String, file: String = "<config>") throws(ConfigError) -> Configuration {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else { throw ConfigError("\(file): the file is empty") }
            root = node
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError("\(file): not valid YAML: \(error)")
        }
        var config = Configuration()
        let top = try KeyedNode(node: root, path: "", file: file).mapping(
            known: ["server", "arena", "models", "policies", "rules", "plugins", "log", "files", "tenants", "memory", "prefix", "durability", "remote", "admin", "metrics"])
        if let s = top["server"] { try readServer(s, into: &config.server) }
        if let a = top["arena"] { try readArena(a, into: &config.arena) }
        guard let models = top["models"] else {
            throw ConfigError("\(file): models: missing; list at least one model layout")
        }
        config.models = try readModels(models)
        if let log = top["log"] {
            let l = try log.mapping(known: ["level", "format"])
            if let level = l["level"] {
                let name = try level.string()
                guard let v = Configuration.LogLevel(rawValue: name) else {
                    throw level.fail("must be one of \(Configuration.LogLevel.allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'")
                }
                config.logLevel = v
            }
            if let format = l["format"] {
                let name = try format.string()
                guard let f = Configuration.LogFormat(rawValue: name) else {
                    throw format.fail("must be one of \(Configuration.LogFormat.allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'")
                }
                config.logFormat = f
            }
        }
        if let p = top["policies"] { config.policies = try PolicyLoader.policies(p) }
        if let r = top["rules"] { config.rules = try PolicyLoader.rules(r) }
        if let p = top["plugins"] {
            let m = try p.mapping(known: ["directories"])
            if let dirs = m["directories"] {
                for item in try dirs.sequence() {
                    let dir = try item.string()
                    guard dir.hasPrefix("/") else { throw item.fail("plugin directories must be absolute paths, got '\(dir)'") }
                    config.pluginDirectories.append(dir)
                }
            }
        }
        if let f = top["files"] {
            let m = try f.mapping(known: ["directories"])
            if let dirs = m["directories"] {
                for item in try dirs.sequence() { config.fileDirectories.append(try item.string()) }
            }
        }
        if let a = top["admin"] { config.admin = try AdminLoader.admin(a) }
        if let t = top["tenants"] { config.tenants = try TenantLoader.tenants(t, defaults: config.arena) }
        if let m = top["memory"] { config.memory = try MemoryLoader.memory(m) }
        if let p = top["prefix"] { config.prefix = try PrefixLoader.prefix(p) }
        if let d = top["durability"] { config.durability = try DurabilityLoader.durability(d) }
        if let r = top["remote"] { config.remote = try RemoteLoader.remote(r) }
        if let m = top["metrics"] { config.metrics = try MetricsLoader.metrics(m) }
        try PolicyLoader.checkReferences(config, file: file)
        try MemoryLoader.checkPolicies(config, file: file)
        for tenant in config.effectiveTenants {
            try checkArenaFits(
                config, tenant.arena, top["tenants"] ?? top["arena"] ?? KeyedNode(node: root, path: "arena", file: file),
                context: config.tenants.isEmpty ? "" : "tenants[\(tenant.name)].shm (sizes default to arena's): ")
        }
        return config
    }

    private static func readServer(_ node: KeyedNode, into s: inout Configuration.Server) throws(ConfigError) {
        let m = try node.mapping(known: [
            "endpoints", "max_message_bytes", "max_tokens_per_append", "max_sequences", "compute_threads",
            "max_sequence_tokens", "ipc_mode", "allow_insecure_tcp", "curve", "request_ids", "drain_seconds",
        ])
        if let e = m["endpoints"] {
            var endpoints: [String] = []
            for item in try e.sequence() {
                let ep = try item.string()
                guard ep.hasPrefix("ipc://") || ep.hasPrefix("tcp://") else {
                    throw item.fail("must start with ipc:// or tcp://, got '\(ep)'")
                }
                endpoints.append(ep)
            }
            guard !endpoints.isEmpty else { throw e.fail("must list at least one endpoint") }
            s.endpoints = endpoints
        }
        if let v = m["max_message_bytes"] { s.maxMessageBytes = try v.bytes(min: 1024) }
        if let v = m["max_tokens_per_append"] { s.maxTokensPerAppend = try v.int(min: 1, max: 1 << 24) }
        if let v = m["max_sequences"] { s.maxSequences = try v.int(min: 1, max: 1 << 24) }
        if let v = m["compute_threads"] { s.computeThreads = try v.int(min: 0, max: 4096) }
        if let v = m["max_sequence_tokens"] { s.maxSequenceTokens = try v.int(min: 1, max: Int(Int32.max)) }
        if let v = m["ipc_mode"] { s.ipcMode = try v.fileMode() }
        if let v = m["drain_seconds"] { s.drainSeconds = Double(try v.int(min: 0, max: 3600)) }
        if let v = m["allow_insecure_tcp"] { s.allowInsecureTCP = try v.bool() }
        if let c = m["curve"] {
            let cm = try c.mapping(known: ["secret_key_file"])
            guard let f = cm["secret_key_file"] else { throw c.fail("missing required key 'secret_key_file'") }
            s.curveSecretKeyFile = try f.string()
        }
        if let r = m["request_ids"] {
            let rm = try r.mapping(known: ["window", "idle_seconds"])
            if let v = rm["window"] { s.requestIDWindow = try v.int(min: 16, max: 1 << 20) }
            if let v = rm["idle_seconds"] { s.requestIDIdleSeconds = try v.int(min: 1, max: 86_400) }
        }
    }

    static func readArena(_ node: KeyedNode, into a: inout Configuration.Arena, nameKey: String = "shm_name") throws(ConfigError) {
        let m = try node.mapping(known: [nameKey, "size_bytes", "staging_bytes", "mode", "uid", "gid"])
        if let v = m[nameKey] {
            let name = try v.string()
            guard name.hasPrefix("/"), name.count > 1, name.count <= 255, !name.dropFirst().contains("/") else {
                throw v.fail("must look like /name (one leading slash, no other), got '\(name)'")
            }
            a.shmName = name
        }
        if let v = m["size_bytes"] { a.sizeBytes = try v.bytes(min: 1) }
        if let v = m["staging_bytes"] { a.stagingBytes = try v.bytes(min: 0) }
        if let v = m["mode"] { a.mode = try v.fileMode() }
        if let v = m["uid"] { a.ownerUID = UInt32(try v.int(min: 0, max: Int(UInt32.max))) }
        if let v = m["gid"] { a.ownerGID = UInt32(try v.int(min: 0, max: Int(UInt32.max))) }
    }

    private static let modelKeys = [
        "name", "layers", "kv_heads", "q_heads", "head_dim", "dtype", "page_tokens", "default_method", "default_policy",
        "layer_windows",
    ]

    private static func readModels(_ node: KeyedNode) throws(ConfigError) -> [ModelLayout] {
        var models: [ModelLayout] = []
        let items = try node.sequence()
        guard !items.isEmpty else { throw node.fail("must list at least one model layout") }
        for item in items {
            let m = try item.mapping(known: modelKeys)
            func required(_ key: String) throws(ConfigError) -> KeyedNode {
                guard let v = m[key] else { throw item.fail("missing required key '\(key)'") }
                return v
            }
            let dtypeNode = try required("dtype")
            let dtypeName = try dtypeNode.string()
            guard let dtype = DType(rawValue: dtypeName) else {
                throw dtypeNode.fail("must be one of f16, bf16, f32, got '\(dtypeName)'")
            }
            let layout = ModelLayout(
                name: try required("name").string(),
                layers: try required("layers").int(min: 1, max: 4096),
                kvHeads: try required("kv_heads").int(min: 1, max: 4096),
                qHeads: try required("q_heads").int(min: 1, max: 65536),
                headDim: try required("head_dim").int(min: 1, max: 16384),
                dtype: dtype,
                pageTokens: try required("page_tokens").int(min: 1, max: 65536),
                defaultMethod: try m["default_method"]?.string() ?? "streamingllm",
                defaultPolicy: try m["default_policy"]?.string() ?? "",
                layerWindows: try m["layer_windows"].map { n throws(ConfigError) in try readWindows(n) } ?? [])
            if let problem = layout.validationProblem() { throw item.fail(problem) }
            guard !models.contains(where: { $0.name == layout.name }) else {
                throw item.fail("name '\(layout.name)' is used by two models")
            }
            models.append(layout)
        }
        return models
    }

    /// `layer_windows`: one integer per layer, each 0 (full attention) or a window of 1...2^24
    /// tokens; the count against `layers` is checked by `ModelLayout.validationProblem`.
    private static func readWindows(_ node: KeyedNode) throws(ConfigError) -> [Int] {
        var out: [Int] = []
        for entry in try node.sequence() { out.append(try entry.int(min: 0, max: ModelLayout.maxWindow)) }
        guard !out.isEmpty else { throw node.fail("must list one window per layer (0 = full attention), or be left out") }
        return out
    }

    /// The arena must hold its header, the staging area and at least one page of the largest model.
    private static func checkArenaFits(_ c: Configuration, _ arena: Configuration.Arena, _ node: KeyedNode, context: String) throws(ConfigError) {
        do {
            _ = try ArenaSizing.compute(segmentBytes: arena.sizeBytes, stagingBytes: arena.stagingBytes, models: c.models)
        } catch {
            throw ConfigError("\(node.file): \(context)\(error.message.dropFirst(5))")
        }
    }
}
