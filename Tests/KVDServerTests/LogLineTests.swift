import Foundation
import Logging
import Testing

@testable import KVDServer

/// The log line formats, checked against Foundation's JSON parser (an independent reader) and
/// against the plain format's documented shape.
@Suite struct LogLineTests {
    @Test func jsonLineParsesWithTypesKept() throws {
        let fields: Logging.Logger.Metadata = [
            "sequence": .stringConvertible(UInt64(12_345_678_901)), "ms": .stringConvertible(1.5),
            "method": .string("snapkv"), "ok": .stringConvertible(true), "nan": .stringConvertible(Double.nan),
        ]
        let line = LogLineHandler.json(.info, "compacted \"x\"\n\ttab \u{1}", fields, now: Date(timeIntervalSince1970: 1_764_538_800.123))
        #expect(line.hasSuffix("}\n") && line.filter { $0 == "\n" }.count == 1, "one line per event")
        let object = try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["msg"] as? String == "compacted \"x\"\n\ttab \u{1}")
        #expect(object["level"] as? String == "info")
        #expect(object["ts"] as? String == "2025-11-30T21:40:00.123Z")
        #expect((object["sequence"] as? NSNumber)?.uint64Value == 12_345_678_901)
        #expect((object["ms"] as? NSNumber)?.doubleValue == 1.5)
        #expect(object["ok"] as? Bool == true)
        #expect(object["nan"] as? String == "nan", "a non-finite number is not valid JSON: written as a string")
        #expect(object["method"] as? String == "snapkv")
        #expect((object["pid"] as? NSNumber)?.int32Value == getpid())
    }

    @Test func reservedKeysCannotBeOverwrittenByFields() throws {
        let line = LogLineHandler.json(.warning, "m", ["level": .string("x"), "msg": .string("y")], now: Date())
        let object = try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["level"] as? String == "warning")
        #expect(object["msg"] as? String == "m")
    }

    @Test func plainLineKeepsItsPrefixAndQuotesOnlyWhatNeedsIt() {
        let line = LogLineHandler.plain(.error, "reload refused", ["b": .string("two words"), "a": .stringConvertible(3), "c": .string("")])
        #expect(line == "kvd error: reload refused a=3 b=\"two words\" c=\"\"\n")
    }

    @Test func controlCharactersAreEscaped() {
        #expect(LogLineHandler.quoted("\u{7F}\u{1F}\\") == "\"\\u007f\\u001f\\\\\"")
    }
}
