import Foundation

extension Configuration {
    /// The admin credential (`admin:`): a token that binds a connection as admin for any tenant
    /// (docs/SECURITY.md, "Admin credential"). Without it and with `tenants:` configured, nobody is
    /// admin; without either, the open tenant's connections are (a single-user, local daemon).
    public struct Admin: Sendable, Equatable {
        public var token: String?
        public var tokenFile: String?
        public init() {}
        /// Whether an admin token is configured.
        public var isConfigured: Bool { token != nil }
    }
}

/// Reads the `admin:` section: `token` or `token_file` (at least 16 characters, like a tenant's).
enum AdminLoader {
    static func admin(_ node: KeyedNode) throws(ConfigError) -> Configuration.Admin {
        let m = try node.mapping(known: ["token", "token_file"])
        var a = Configuration.Admin()
        if let v = m["token"] {
            let token = try v.string()
            guard token.utf8.count >= 16 else { throw v.fail("must be at least 16 characters (it is the admin's password)") }
            a.token = token
        }
        if let v = m["token_file"] {
            guard a.token == nil else { throw v.fail("give token or token_file, not both") }
            a.tokenFile = try v.string()
        }
        guard a.token != nil || a.tokenFile != nil else { throw node.fail("give token or token_file (or leave the section out)") }
        return a
    }

    /// The first line of the admin token file; its contents never appear in an error.
    static func readToken(_ path: String, file: String) throws(ConfigError) -> String {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError("\(file): admin.token_file: cannot read \(path)")
        }
        let token = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        guard token.utf8.count >= 16 else {
            throw ConfigError("\(file): admin.token_file: \(path) must hold a token of at least 16 characters on its first line")
        }
        return token
    }
}
