import Foundation
@testable import KVDConfig
import Testing

@Suite struct PrefixConfigTests {
    func parse(_ prefix: String) throws(ConfigError) -> Configuration {
        try ConfigLoader.parse("prefix:\n" + prefix + "\n" + ConfigLoaderTests.model, file: "test.yaml")
    }

    @Test func defaultsAndKeys() throws {
        #expect(try ConfigLoader.parse(ConfigLoaderTests.model).prefix == Configuration.Prefix())
        #expect(Configuration.Prefix().enabled)
        #expect(try parse("  enabled: false").prefix.enabled == false)
        #expect(throws: ConfigError.self) { try parse("  enabld: false") }
        #expect(throws: ConfigError.self) { try parse("  key_file: \"\"") }
    }

    @Test func keyFileIsReadAndChecked() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvd-prefix-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("kvd.yaml")
        try ("prefix:\n  key_file: \"k.hex\"\n" + ConfigLoaderTests.model).write(to: config, atomically: true, encoding: .utf8)
        let key = dir.appendingPathComponent("k.hex")
        try "000102030405060708090a0b0c0d0eFF\n".write(to: key, atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: config.path)
        #expect(c.prefix.key == Array(0..<15 as Range<UInt8>) + [255])
        #expect(c.prefix.keyFile == key.path)
        for bad in ["0001", "zz0102030405060708090a0b0c0d0e0f", "000102030405060708090a0b0c0d0e0f00"] {
            try bad.write(to: key, atomically: true, encoding: .utf8)
            #expect(throws: ConfigError.self) { try ConfigLoader.load(path: config.path) }
        }
    }
}
