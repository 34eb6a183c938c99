/// xxHash64 (Yann Collet's XXH64, written from its specification): the remote tier's blob checksum.
/// Not keyed and not a defence against tampering — it finds corrupted bytes — but it runs at
/// memory speed on megabyte blobs, where SipHash (kept for prefix hashes, which must resist chosen
/// collisions) would be a large share of an offload or a restore.
public enum XXHash64 {
    private static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    // Masking shifts: `<<`/`>>` would add an over-shift branch to every step of the inner loop.
    @inline(__always) private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x &<< r) | (x &>> (64 &- r)) }
    @inline(__always) private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }
    @inline(__always) private static func merge(_ acc: UInt64, _ v: UInt64) -> UInt64 {
        (acc ^ round(0, v)) &* p1 &+ p4
    }

    public static func hash(_ data: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var s = Stream(seed: seed)
        s.update(data)
        return s.digest()
    }

    /// The last steps: fold the four lanes (if a whole stripe was seen), mix in the length, then the
    /// bytes after the last stripe, then avalanche.
    private static func finish(_ lanes: (UInt64, UInt64, UInt64, UInt64)?, seed: UInt64, total: Int, rest: UnsafeRawBufferPointer) -> UInt64 {
        @inline(__always) func u64(_ i: Int) -> UInt64 { UInt64(littleEndian: rest.loadUnaligned(fromByteOffset: i, as: UInt64.self)) }
        @inline(__always) func u32(_ i: Int) -> UInt64 { UInt64(UInt32(littleEndian: rest.loadUnaligned(fromByteOffset: i, as: UInt32.self))) }
        var h: UInt64
        if let (v1, v2, v3, v4) = lanes {
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1)
            h = merge(h, v2)
            h = merge(h, v3)
            h = merge(h, v4)
        } else {
            h = seed &+ p5
        }
        h &+= UInt64(total)
        let n = rest.count
        var i = 0
        while i + 8 <= n {
            h ^= round(0, u64(i))
            h = rotl(h, 27) &* p1 &+ p4
            i += 8
        }
        if i + 4 <= n {
            h ^= u32(i) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            i += 4
        }
        while i < n {
            h ^= UInt64(rest[i]) &* p5
            h = rotl(h, 11) &* p1
            i += 1
        }
        h ^= h >> 33
        h &*= p2
        h ^= h >> 29
        h &*= p3
        h ^= h >> 32
        return h
    }

    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 { bytes.withUnsafeBytes { hash($0, seed: seed) } }

    // MARK: - Streaming

    /// xxHash64 over bytes that arrive in pieces (a blob being written head by head, a reply being
    /// read from a socket): each piece is hashed while it is still in cache, instead of the whole
    /// blob again from memory at the end. Any split gives the one-shot `hash` of the concatenation.
    public struct Stream {
        private var v1, v2, v3, v4: UInt64
        private let seed: UInt64
        private var total = 0
        /// Up to 31 bytes that did not make a whole 32-byte stripe yet.
        private var tail: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        private var tailCount = 0

        public init(seed: UInt64 = 0) {
            self.seed = seed
            v1 = seed &+ XXHash64.p1 &+ XXHash64.p2
            v2 = seed &+ XXHash64.p2
            v3 = seed
            v4 = seed &- XXHash64.p1
        }

        public mutating func update(_ data: UnsafeRawBufferPointer) {
            let n = data.count
            if n == 0 { return }
            var i = 0
            total += n
            if tailCount > 0 {
                let take = min(32 - tailCount, n)
                withUnsafeMutableBytes(of: &tail) { t in
                    t.baseAddress!.advanced(by: tailCount).copyMemory(from: data.baseAddress!, byteCount: take)
                }
                tailCount += take
                i = take
                if tailCount < 32 { return }
                stripe(withUnsafeBytes(of: &tail) { UnsafeRawBufferPointer($0) }, at: 0)
                tailCount = 0
            }
            if i + 32 <= n {
                // The lanes in locals for the loop: as stored properties of `self` they would be
                // loaded and stored at every stripe.
                var a = v1, b = v2, c = v3, d = v4
                while i + 32 <= n {
                    a = XXHash64.round(a, UInt64(littleEndian: data.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
                    b = XXHash64.round(b, UInt64(littleEndian: data.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)))
                    c = XXHash64.round(c, UInt64(littleEndian: data.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)))
                    d = XXHash64.round(d, UInt64(littleEndian: data.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)))
                    i += 32
                }
                (v1, v2, v3, v4) = (a, b, c, d)
            }
            if i < n {
                withUnsafeMutableBytes(of: &tail) { t in
                    t.baseAddress!.copyMemory(from: data.baseAddress! + i, byteCount: n - i)
                }
                tailCount = n - i
            }
        }

        @inline(__always) private mutating func stripe(_ d: UnsafeRawBufferPointer, at i: Int) {
            v1 = XXHash64.round(v1, UInt64(littleEndian: d.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            v2 = XXHash64.round(v2, UInt64(littleEndian: d.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)))
            v3 = XXHash64.round(v3, UInt64(littleEndian: d.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)))
            v4 = XXHash64.round(v4, UInt64(littleEndian: d.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)))
        }

        /// The hash of everything given so far (the stream can go on after).
        public func digest() -> UInt64 {
            var copy = self
            return withUnsafeBytes(of: &copy.tail) { t in
                XXHash64.finish(total >= 32 ? (v1, v2, v3, v4) : nil, seed: seed, total: total,
                                rest: UnsafeRawBufferPointer(rebasing: t[0..<tailCount]))
            }
        }
    }
}
