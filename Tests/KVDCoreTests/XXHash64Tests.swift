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

/// The streaming form over every way of cutting the input gives the reference vector: pieces of
/// every size from 1 to 40 (inside, at and across the 32-byte stripe), empty pieces, and a digest
/// taken midway that does not disturb the stream.
@Suite struct XXHash64StreamTests {
    static let long = Array((0..<3).flatMap { _ in (0...255).map { UInt8($0) } }) + Array("xyz".utf8)

    @Test func anySplitGivesTheReference() {
        for size in 1...40 {
            var s = XXHash64.Stream()
            var at = 0
            while at < Self.long.count {
                let end = min(at + size, Self.long.count)
                Self.long[at..<end].withUnsafeBytes { s.update($0) }
                [UInt8]().withUnsafeBytes { s.update($0) }
                at = end
            }
            #expect(s.digest() == 0xE921_A1B4_5BD7_79F8, "pieces of \(size)")
        }
    }

    @Test func digestMidwayAndShortInputs() {
        var s = XXHash64.Stream()
        #expect(s.digest() == 0xEF46_DB37_51D8_E999)
        Array("ab".utf8).withUnsafeBytes { s.update($0) }
        _ = s.digest()
        Array("c".utf8).withUnsafeBytes { s.update($0) }
        #expect(s.digest() == 0x44BC_2CF5_AD77_0999)
    }
}
