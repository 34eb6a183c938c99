import Foundation
@testable import KVDConfig
import Testing

@Suite struct DurabilityConfigTests {
    func parse(_ body: String) throws(ConfigError) -> Configuration {
        try ConfigLoader.parse("durability:\n" + body + "\n" + ConfigLoaderTests.model, file: "test.yaml")
    }

    @Test func defaultsKeysAndRefusals() throws {
        let d = try ConfigLoader.parse(ConfigLoaderTests.model).durability
        #expect(d == Configuration.Durability())
        #expect(!d.enabled && d.directory == "/dev/shm" && d.checkpointBytes == 64 << 20 && !d.keepOnExit && !d.fresh)
        let c = try parse("  enabled: true\n  directory: \"/tmp/j\"\n  checkpoint_bytes: \"1MiB\"\n  keep_on_exit: true").durability
        #expect(c.enabled && c.directory == "/tmp/j" && c.checkpointBytes == 1 << 20 && c.keepOnExit)
        #expect(throws: ConfigError.self) { try parse("  enabld: true") }
        #expect(throws: ConfigError.self) { try parse("  directory: \"\"") }
        #expect(throws: ConfigError.self) { try parse("  checkpoint_bytes: 100") }  // below 4 KiB
        #expect(throws: ConfigError.self) { try parse("  keep_on_exit: 3") }
    }

    @Test func aRelativeDirectoryIsNextToTheConfigFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvd-durability-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("kvd.yaml")
        try ("durability:\n  directory: \"journals\"\n" + ConfigLoaderTests.model).write(to: config, atomically: true, encoding: .utf8)
        #expect(try ConfigLoader.load(path: config.path).durability.directory == dir.appendingPathComponent("journals").standardizedFileURL.path)
    }
}
