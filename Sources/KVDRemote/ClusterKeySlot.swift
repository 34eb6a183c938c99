/// Redis Cluster's key → hash slot function (cluster spec, "Keys distribution model"):
/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0, no reflection) of the key, modulo 16384.
/// If the key has a hash tag — a `{` followed later by a `}` with at least one byte between the
/// first such pair — only the bytes between them are hashed, so `{user1000}.following` and
/// `{user1000}.followers` land in one slot and can be used together in one command.
public enum ClusterKeySlot {
    /// Number of hash slots in a Redis Cluster.
    public static let count = 16384

    /// The slot of `key`, 0..<16384.
    public static func of(_ key: [UInt8]) -> Int {
        Int(crc16(hashedPart(of: key)) & UInt16(count - 1))  // count is a power of two: mod is a mask
    }

    /// The bytes that are hashed: the first non-empty `{…}` hash tag's content, else the whole key.
    static func hashedPart(of key: [UInt8]) -> ArraySlice<UInt8> {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")),
              let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")),
              close > open + 1
        else { return key[...] }
        return key[(open + 1)..<close]
    }

    /// CRC16-CCITT (XMODEM), the variant Redis uses; `crc16("123456789") == 0x31C3`.
    static func crc16(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for b in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ b)]
        }
        return crc
    }

    /// The byte-at-a-time table for polynomial 0x1021.
    private static let table: [UInt16] = (0..<256).map { (i: Int) -> UInt16 in
        var crc = UInt16(i) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
