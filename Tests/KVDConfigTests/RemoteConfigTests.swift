@testable import KVDConfig
import Testing

@Suite struct RemoteConfigTests {
    func parse(_ body: String) throws(ConfigError) -> Configuration {
        try ConfigLoader.parse("remote:\n" + body + "\n" + ConfigLoaderTests.model, file: "test.yaml")
    }

    @Test func defaultsKeysAndRefusals() throws {
        let d = try ConfigLoader.parse(ConfigLoaderTests.model).remote
        #expect(d == Configuration.Remote())
        #expect(!d.enabled && d.mode == .single && d.nodes == ["127.0.0.1:6379"] && d.keyPrefix == "kvd:" && d.offloadEvicted)
        let c = try parse("""
              enabled: true
              mode: "cluster"
              nodes: ["127.0.0.1:7000", "localhost:7001"]
              key_prefix: "a:"
              ttl_seconds: 60
              connect_timeout_ms: 50
              command_timeout_ms: 70
              offload_evicted: false
              offload_policy: "pressure"
              queue_bytes: "1MiB"
            """).remote
        #expect(c.enabled && c.mode == .cluster && c.nodes == ["127.0.0.1:7000", "localhost:7001"] && c.keyPrefix == "a:")
        #expect(c.blockKeyPrefix == nil && c.effectiveBlockKeyPrefix == "a:")
        let split = try parse("  key_prefix: \"a:\"\n  block_key_prefix: \"shared:\"").remote
        #expect(split.keyPrefix == "a:" && split.effectiveBlockKeyPrefix == "shared:")
        #expect(c.ttlSeconds == 60 && c.connectTimeoutMilliseconds == 50 && c.commandTimeoutMilliseconds == 70)
        #expect(!c.offloadEvicted && c.queueBytes == 1 << 20 && c.offloadPolicy == "pressure")
        // A policy that does not exist is refused where it is named.
        #expect(throws: ConfigError.self) { try parse("  offload_policy: \"nope\"") }
        for bad in ["  mode: \"ring\"", "  nodes: []", "  nodes: [\"nohost\"]", "  nodes: [\"h:0\"]", "  nodes: [\"h:70000\"]",
                    "  key_prefix: \"{x}\"", "  block_key_prefix: \"}\"", "  ttl_seconds: -1", "  command_timeout_ms: 0", "  enabld: true"] {
            #expect(throws: ConfigError.self, "\(bad)") { try parse(bad) }
        }
    }
}
