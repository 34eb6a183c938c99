import KVDCore
import Testing

/// xxHash64 against the reference implementation's outputs (the `xxhash` Python package, seed 0),
/// covering every tail length path: empty, 1 byte, 3 bytes, and 771 bytes (32-byte stripes, then
/// 8-, 4- and 1-byte tails).
@Suite struct XXHash64Tests {
    @Test func referenceVectors() {
        #expect(XXHash64.hash([]) == 0xEF46_DB37_51D8_E999)
        #expect(XXHash64.hash(Array("a".utf8)) == 0xD24E_C4F1_A98C_6E5B)
        #expect(XXHash64.hash(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
        let long = Array((0..<3).flatMap { _ in (0...255).map { UInt8($0) } }) + Array("xyz".utf8)
        #expect(long.count == 771)
        #expect(XXHash64.hash(long) == 0xE921_A1B4_5BD7_79F8)
    }
}
