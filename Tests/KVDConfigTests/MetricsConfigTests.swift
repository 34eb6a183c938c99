@testable import KVDConfig
import Testing

@Suite struct MetricsConfigTests {
    func parse(_ body: String) throws(ConfigError) -> Configuration.Metrics {
        try ConfigLoader.parse("metrics:\n" + body + "\n" + ConfigLoaderTests.model, file: "test.yaml").metrics
    }

    func refusal(_ body: String) -> String {
        do { _ = try parse(body) } catch { return error.message }
        return ""
    }

    @Test func offUnlessConfiguredAndLoopbackByDefault() throws {
        let m = try ConfigLoader.parse(ConfigLoaderTests.model).metrics
        #expect(m == Configuration.Metrics())
        #expect(!m.enabled && m.host == "127.0.0.1" && m.port == 9464 && m.listen == "127.0.0.1:9464")
        let bundled = try ConfigLoader.load(path: "Config/kvd.yaml").metrics
        #expect(bundled.enabled && bundled.listen == "127.0.0.1:9464")
    }

    @Test func listenTakesAddressLiteralsAndPortZero() throws {
        let v4 = try parse("  enabled: true\n  listen: \"0.0.0.0:0\"")
        #expect(v4.enabled && v4.host == "0.0.0.0" && v4.port == 0)
        let v6 = try parse("  listen: \"[::1]:9100\"")
        #expect(v6.host == "::1" && v6.port == 9100 && v6.listen == "[::1]:9100")
    }

    @Test func aBadListenAddressIsAnErrorNamingTheKeyNeverATrap() {
        for bad in ["localhost:9464", "127.0.0.1", "127.0.0.1:65536", "127.0.0.1:-1", "::1:9464", "[127.0.0.1]:80", ":9464", "1.2.3:80", "[]:80", ""] {
            let message = refusal("  listen: \"\(bad)\"")
            #expect(message.contains("test.yaml:2: metrics.listen"), "\(bad): \(message)")
        }
        #expect(refusal("  enabled: \"yes please\"").contains("metrics.enabled"))
        #expect(refusal("  port: 9464").contains("port"))  // unknown key
    }
}
