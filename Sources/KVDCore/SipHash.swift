/// SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012), written from the
/// paper's description: a keyed hash, so block hashes of one key cannot be predicted — or collided
/// on purpose — by someone who does not know it (a client that could make two different prompts
/// share a hash would read another prompt's K/V). Both output sizes: 64 bits (the paper's, checked
/// against its published vectors) and the 128-bit variant, which prefix hashes use so that an
/// accidental collision among billions of cached blocks stays out of reach.
public struct SipKey: Sendable, Hashable {
    public let k0: UInt64
    public let k1: UInt64
    public init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }

    /// The key from 16 bytes, little-endian halves as in the reference (k0 = bytes 0..<8).
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        let b = Array(bytes)
        k0 = SipHash.littleEndianWord(b, 0, 8)
        k1 = SipHash.littleEndianWord(b, 8, 8)
    }
}

public enum SipHash {
    /// 64-bit SipHash-2-4 of `message`; the result's little-endian bytes are the reference's output.
    public static func hash64(_ message: [UInt8], key: SipKey) -> UInt64 {
        message.withUnsafeBytes { hash64($0, key: key) }
    }

    /// 64-bit SipHash-2-4 of the bytes `message` points at (checksums of large blobs: no copy).
    public static func hash64(_ message: UnsafeRawBufferPointer, key: SipKey) -> UInt64 {
        var s = State(key: key, wide: false)
        s.absorb(message)
        return s.finish()
    }

    /// 128-bit SipHash-2-4 of `message`: `lo` is the reference's first 8 output bytes
    /// (little-endian), `hi` the next 8.
    public static func hash128(_ message: [UInt8], key: SipKey) -> (lo: UInt64, hi: UInt64) {
        var s = State(key: key, wide: true)
        message.withUnsafeBytes { s.absorb($0) }
        let lo = s.finish()
        // The second half: another finalization from the same state, told apart by 0xdd.
        s.v1 ^= 0xdd
        s.rounds(4)
        return (lo, s.v0 ^ s.v1 ^ s.v2 ^ s.v3)
    }

    static func littleEndianWord(_ b: [UInt8], _ start: Int, _ count: Int) -> UInt64 {
        var w: UInt64 = 0
        for i in 0..<count { w |= UInt64(b[start + i]) << (8 * UInt64(i)) }
        return w
    }

    private struct State {
        var v0, v1, v2, v3: UInt64
        let wide: Bool

        init(key: SipKey, wide: Bool) {
            // "somepseudorandomlygeneratedbytes", the paper's initialization constants.
            v0 = key.k0 ^ 0x736f_6d65_7073_6575
            v1 = key.k1 ^ 0x646f_7261_6e64_6f6d
            v2 = key.k0 ^ 0x6c79_6765_6e65_7261
            v3 = key.k1 ^ 0x7465_6462_7974_6573
            self.wide = wide
            // The 128-bit variant differs from the first round on, so its first half is not the 64-bit hash.
            if wide { v1 ^= 0xee }
        }

        mutating func rounds(_ n: Int) {
            for _ in 0..<n {
                v0 &+= v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
                v2 &+= v3; v3 = rotl(v3, 16); v3 ^= v2
                v0 &+= v3; v3 = rotl(v3, 21); v3 ^= v0
                v2 &+= v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
            }
        }

        @inline(__always) func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 - b)) }

        mutating func compress(_ m: UInt64) {
            v3 ^= m
            rounds(2)
            v0 ^= m
        }

        /// Whole 8-byte words (loaded straight from memory: megabyte blobs are checksummed too),
        /// then the last 0–7 bytes with the length's low byte on top.
        mutating func absorb(_ message: UnsafeRawBufferPointer) {
            let count = message.count
            let whole = count / 8 * 8
            var i = 0
            while i < whole {
                compress(UInt64(littleEndian: message.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
                i += 8
            }
            var last = UInt64(truncatingIfNeeded: count) << 56
            for j in 0..<(count - whole) { last |= UInt64(message[whole + j]) << (8 * UInt64(j)) }
            compress(last)
        }

        mutating func finish() -> UInt64 {
            v2 ^= wide ? 0xee : 0xff
            rounds(4)
            return v0 ^ v1 ^ v2 ^ v3
        }
    }
}
