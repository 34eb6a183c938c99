import Foundation
import KVDConfig
import KVDCore
import Testing

@Suite struct TenantConfigTests {
    func parse(_ yaml: String) throws -> Configuration {
        try ConfigLoader.parse(ConfigLoaderTests.model + "\n" + yaml, file: "test.yaml")
    }

    func error(_ yaml: String) -> String? {
        do {
            _ = try parse(yaml)
            return nil
        } catch {
            return (error as? ConfigError)?.message ?? "\(error)"
        }
    }

    @Test func withoutTenantsOneOpenTenantUsesTheArena() throws {
        let c = try parse("arena: {shm_name: \"/x\"}")
        #expect(c.tenants.isEmpty)
        #expect(c.effectiveTenants.map(\.name) == ["default"])
        #expect(c.effectiveTenants[0].arena.shmName == "/x")
        #expect(c.effectiveTenants[0].token == nil)
    }

    @Test func tenantsGetTheirOwnSegmentsAndQuotas() throws {
        let c = try parse("""
            tenants:
              - name: a
                token: "0123456789abcdef-a"
                shm: {name: "/seg-a", size_bytes: "40MiB", mode: "0640"}
                quotas: {pages: 10, sequences: 3}
              - name: b
                curve_public_keys: ["\(String(repeating: "x", count: 40))"]
                unix_uids: [1000, 1001]
              - name: open
            """)
        #expect(c.tenants.map(\.name) == ["a", "b", "open"])
        #expect(c.tenants[0].arena.shmName == "/seg-a")
        #expect(c.tenants[0].arena.sizeBytes == 40 << 20)
        #expect(c.tenants[0].arena.mode == 0o640)
        #expect((c.tenants[0].maxPages, c.tenants[0].maxSequences) == (10, 3))
        // Without a name of its own, a tenant's segment is named after it, never shared.
        #expect(c.tenants[1].arena.shmName == "/kvd-b")
        #expect(c.tenants[1].unixUIDs == [1000, 1001])
        #expect(c.tenants[2].token == nil)
    }

    @Test(arguments: [
        ("tenants: []", "at least one tenant"),
        ("tenants: [{name: a}, {name: a, token: \"0123456789abcdef\"}]", "also used"),
        ("tenants: [{name: a}, {name: b}]", "at most one tenant may be open"),
        ("tenants: [{name: a, token: short}]", "at least 16"),
        ("tenants: [{name: \"a b\"}]", "letters, digits"),
        ("tenants: [{name: a, shm: {name: \"/s\"}}, {name: b, token: \"0123456789abcdef\", shm: {name: \"/s\"}}]", "own segment"),
        ("tenants: [{name: a, token: \"0123456789abcdef\"}, {name: b, token: \"0123456789abcdef\"}]", "two tenants"),
        ("tenants: [{name: a, curve_public_keys: [\"short\"]}]", "40 characters"),
        ("tenants: [{name: a, colour: red}]", "unknown key"),
        ("tenants: [{name: a, shm: {name: \"/s\", mode: \"0999\"}}]", "octal"),
        ("server: {ipc_mode: \"1777\"}", "octal"),
        ("server: {max_sequence_tokens: 4294967296}", "2147483647"),
        ("server: {curve: {}}", "secret_key_file"),
        ("server: {request_ids: {window: 1}}", "16..."),
    ])
    func refused(_ yaml: String, _ fragment: String) {
        let message = error(yaml)
        #expect(message?.contains(fragment) == true, "\(yaml) → \(message ?? "accepted")")
    }

    @Test func serverSecurityKeys() throws {
        let c = try parse("""
            server:
              ipc_mode: "0660"
              allow_insecure_tcp: true
              max_sequence_tokens: 100000
              request_ids: {window: 64, idle_seconds: 5}
            """)
        #expect(c.server.ipcMode == 0o660)
        #expect(c.server.allowInsecureTCP)
        #expect(c.server.maxSequenceTokens == 100_000)
        #expect((c.server.requestIDWindow, c.server.requestIDIdleSeconds) == (64, 5))
        #expect(Configuration.Server().ipcMode == 0o600)
        #expect(Configuration.Server().maxSequenceTokens == Int(Int32.max))
    }

    @Test func tokenFileIsReadAndRelativePathsResolveNextToTheConfig() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvd-tenant-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "secret-token-from-file-123\nignored\n".write(to: dir.appendingPathComponent("a.token"), atomically: true, encoding: .utf8)
        let file = dir.appendingPathComponent("kvd.yaml")
        try (ConfigLoaderTests.model + """

            files: {directories: ["scores"]}
            tenants: [{name: a, token_file: "a.token"}]
            """).write(to: file, atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: file.path)
        #expect(c.tenants[0].token == "secret-token-from-file-123")
        #expect(c.fileDirectories == [dir.standardizedFileURL.path + "/scores"])
    }
}
