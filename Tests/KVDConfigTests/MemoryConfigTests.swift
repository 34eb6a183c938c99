import Foundation
import KVDConfig
import Testing

@Suite struct MemoryConfigTests {
    func parse(_ memory: String, policies: String = "") throws(ConfigError) -> Configuration {
        try ConfigLoader.parse("memory:\n" + memory + "\n" + policies + ConfigLoaderTests.model, file: "test.yaml")
    }

    func error(_ memory: String, policies: String = "") -> String? {
        do {
            _ = try parse(memory, policies: policies)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func defaultsAreAServingStacksChoice() throws {
        let c = try ConfigLoader.parse(ConfigLoaderTests.model)
        #expect(c.memory == Configuration.Memory())
        #expect(c.memory.leaseSeconds == 30 && c.memory.orphanGraceSeconds == 600)
        #expect(c.memory.high == 0.9 && c.memory.low == 0.8 && c.memory.evict)
        #expect(c.memory.eventsEndpoint.isEmpty)
    }

    @Test func bundledConfigSetsEveryKey() throws {
        let c = try ConfigLoader.load(path: "Config/kvd.yaml")
        #expect(c.memory.compressPolicy == "pressure" && c.policies.contains { $0.name == "pressure" })
        #expect(c.memory.eventsEndpoint.hasPrefix("ipc://"))
        let text = try String(contentsOfFile: "Config/kvd.yaml", encoding: .utf8)
        for key in ["lease_seconds", "orphan_grace_seconds", "high", "low", "compress_policy", "fallback_policy", "floor_tokens",
                    "busy_ms", "evict", "keep_queries_bytes", "interval_ms", "reclaim_wait_ms", "events_endpoint", "pinned_pages"] {
            #expect(text.contains("\(key):"), "Config/kvd.yaml documents memory.\(key)")
        }
    }

    @Test func readsEveryKey() throws {
        let c = try parse("""
              lease_seconds: 2.5
              orphan_grace_seconds: 0
              high: 0.95
              low: 0.5
              compress_policy: ""
              fallback_policy: ""
              floor_tokens: 32
              busy_ms: 0
              evict: false
              keep_queries_bytes: "1MiB"
              interval_ms: 20
              reclaim_wait_ms: 0
              events_endpoint: "tcp://127.0.0.1:5599"
            """)
        var want = Configuration.Memory()
        (want.leaseSeconds, want.orphanGraceSeconds, want.high, want.low) = (2.5, 0, 0.95, 0.5)
        (want.compressPolicy, want.fallbackPolicy, want.floorTokens, want.busyMilliseconds) = ("", "", 32, 0)
        (want.evict, want.keepQueriesBytes, want.intervalMilliseconds, want.reclaimWaitMilliseconds) = (false, 1 << 20, 20, 0)
        want.eventsEndpoint = "tcp://127.0.0.1:5599"
        #expect(c.memory == want)
    }

    @Test func badValuesAreNamed() {
        #expect(error("  low: 0.9\n  high: 0.8")?.contains("low (0.9) must be below high (0.8)") == true)
        #expect(error("  high: 1.5")?.contains("memory.high: must be in") == true)
        #expect(error("  lease_seconds: -1")?.contains("memory.lease_seconds: must be in") == true)
        #expect(error("  high: \"lots\"")?.contains("memory.high: must be a number") == true)
        #expect(error("  events_endpoint: \"http://x\"")?.contains("memory.events_endpoint: must be empty") == true)
        #expect(error("  compress_policy: \"nope\"")?.contains("memory.compress_policy: policy 'nope' is not defined") == true)
        #expect(error("  leases: 3")?.contains("memory.leases: unknown key") == true)
    }

    @Test func pinnedPageQuotaIsATenantQuota() throws {
        let c = try ConfigLoader.parse("""
            tenants:
              - name: "a"
                quotas:
                  pinned_pages: 128
            """ + "\n" + ConfigLoaderTests.model)
        #expect(c.tenants.first?.maxPinnedPages == 128)
    }
}
