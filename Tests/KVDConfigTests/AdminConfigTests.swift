import Foundation
import KVDConfig
import Testing

@Suite struct AdminConfigTests {
    func load(_ yaml: String, files: [String: String] = [:]) throws -> Configuration {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvd-admin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, text) in files { try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        let path = dir.appendingPathComponent("kvd.yaml").path
        try (ConfigLoaderTests.model + "\n" + yaml).write(toFile: path, atomically: true, encoding: .utf8)
        return try ConfigLoader.load(path: path)
    }

    func error(_ yaml: String, files: [String: String] = [:]) -> String? {
        do {
            _ = try load(yaml, files: files)
            return nil
        } catch {
            return (error as? ConfigError)?.message ?? "\(error)"
        }
    }

    @Test func noSectionNoAdmin() throws {
        #expect(try !load("").admin.isConfigured)
    }

    @Test func tokenInlineOrFromAFileNextToTheConfig() throws {
        #expect(try load("admin: {token: \"admin-0123456789abcdef\"}").admin.token == "admin-0123456789abcdef")
        let fromFile = try load("admin: {token_file: \"admin.token\"}", files: ["admin.token": "admin-from-file-0123456789\nignored\n"])
        #expect(fromFile.admin.token == "admin-from-file-0123456789")
    }

    @Test func refusesWeakMissingOrClashingTokens() {
        #expect(error("admin: {token: \"short\"}")?.contains("admin.token: must be at least 16 characters") == true)
        #expect(error("admin: {}")?.contains("give token or token_file") == true)
        #expect(error("admin: {token: \"admin-0123456789abcdef\", token_file: \"f\"}")?.contains("not both") == true)
        #expect(error("admin: {tokens: \"x\"}")?.contains("tokens") == true)
        let missing = error("admin: {token_file: \"absent.token\"}")
        #expect(missing?.contains("admin.token_file: cannot read") == true)
        let weakFile = error("admin: {token_file: \"admin.token\"}", files: ["admin.token": "short\n"])
        #expect(weakFile?.contains("at least 16 characters") == true && weakFile?.contains("short\n") == false)
        let clash = error("""
            admin: {token: "same-token-0123456789"}
            tenants:
              - name: a
                token: "same-token-0123456789"
            """)
        #expect(clash?.contains("admin token is also a tenant's token") == true)
    }
}
