import Foundation

/// Reads the `tenants:` section. Each tenant names its credential(s), its own shared-memory
/// segment and its quotas; names, segment names, tokens and keys must be unique, and at most one
/// tenant may be open (no credential), because that is the one unauthenticated connections use.
enum TenantLoader {
    static let keys = ["name", "token", "token_file", "curve_public_keys", "unix_uids", "shm", "quotas"]

    static func tenants(_ node: KeyedNode, defaults: Configuration.Arena) throws(ConfigError) -> [Configuration.Tenant] {
        var out: [Configuration.Tenant] = []
        let items = try node.sequence()
        guard !items.isEmpty else { throw node.fail("must list at least one tenant (or leave the section out for one open tenant)") }
        for item in items {
            let m = try item.mapping(known: keys)
            guard let nameNode = m["name"] else { throw item.fail("missing required key 'name'") }
            let name = try nameNode.string()
            guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
                throw nameNode.fail("must be 1-64 letters, digits, '-' or '_', got '\(name)'")
            }
            var arena = defaults
            // A tenant without its own shm name gets one derived from its name, so two tenants
            // never share a segment by accident.
            arena.shmName = "/kvd-\(name)"
            if let shm = m["shm"] { try ConfigLoader.readArena(shm, into: &arena, nameKey: "name") }
            var t = Configuration.Tenant(name: name, arena: arena)
            t.line = item.node.mark.map { Int($0.line) } ?? 0
            if let v = m["token"] {
                let token = try v.string()
                guard token.utf8.count >= 16 else { throw v.fail("must be at least 16 characters (it is the tenant's password)") }
                t.token = token
            }
            if let v = m["token_file"] {
                guard t.token == nil else { throw v.fail("give token or token_file, not both") }
                t.tokenFile = try v.string()
            }
            if let v = m["curve_public_keys"] {
                for k in try v.sequence() {
                    let key = try k.string()
                    guard key.utf8.count == 40 else { throw k.fail("must be a Z85 CURVE public key (40 characters), got \(key.utf8.count)") }
                    t.curvePublicKeys.append(key)
                }
            }
            if let v = m["unix_uids"] {
                for u in try v.sequence() { t.unixUIDs.append(UInt32(try u.int(min: 0, max: Int(UInt32.max)))) }
            }
            if let q = m["quotas"] {
                let qm = try q.mapping(known: ["pages", "sequences", "pinned_pages"])
                if let v = qm["pinned_pages"] { t.maxPinnedPages = try v.int(min: 0, max: Int(UInt32.max)) }
                if let v = qm["pages"] { t.maxPages = try v.int(min: 0, max: Int(UInt32.max)) }
                if let v = qm["sequences"] { t.maxSequences = try v.int(min: 0, max: 1 << 24) }
            }
            if let clash = out.first(where: { $0.name == t.name }) {
                throw item.fail("tenant name '\(name)' is also used at line \(clash.line)")
            }
            if out.contains(where: { $0.arena.shmName == t.arena.shmName }) {
                throw item.fail("shm name \(t.arena.shmName) is used by two tenants; each tenant needs its own segment")
            }
            if let token = t.token, out.contains(where: { $0.token == token }) {
                throw item.fail("token is used by two tenants")
            }
            for key in t.curvePublicKeys where out.contains(where: { $0.curvePublicKeys.contains(key) }) {
                throw item.fail("CURVE key \(key.prefix(8))… is listed for two tenants")
            }
            out.append(t)
        }
        let open = out.filter { $0.token == nil && $0.tokenFile == nil && $0.curvePublicKeys.isEmpty }
        if open.count > 1 {
            throw node.fail("tenants \(open.map(\.name).joined(separator: ", ")) have no credential; at most one tenant may be open")
        }
        return out
    }

    /// The first line of a token file. The file's contents never appear in an error.
    static func readToken(_ path: String, tenant: String, file: String) throws(ConfigError) -> String {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError("\(file): tenants.\(tenant).token_file: cannot read \(path)")
        }
        let token = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        guard token.utf8.count >= 16 else {
            throw ConfigError("\(file): tenants.\(tenant).token_file: \(path) must hold a token of at least 16 characters on its first line")
        }
        return token
    }
}
