/// Reads a fuzz input as a stream of choices. An exhausted input reads as zeros, so every input,
/// however short, is a complete program: libFuzzer's mutations (insert, erase, flip) then shift or
/// change choices instead of making whole inputs invalid.
struct ByteReader {
    private let data: [UInt8]
    private var index: Int

    init(_ bytes: [UInt8], from start: Int = 0) {
        data = bytes
        index = start
    }

    var isAtEnd: Bool { index >= data.count }

    mutating func u8() -> UInt8 {
        guard index < data.count else { return 0 }
        defer { index += 1 }
        return data[index]
    }

    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    mutating func bool() -> Bool { u8() & 1 == 1 }

    /// Up to `count` raw bytes (fewer at the end of the input).
    mutating func bytes(_ count: Int) -> [UInt8] {
        let n = max(0, min(count, data.count - index))
        defer { index += n }
        return Array(data[index..<index + n])
    }

    /// One of `options`, chosen by the next byte.
    mutating func pick<T>(_ options: [T]) -> T { options[Int(u8()) % options.count] }

    /// Mostly a boundary value; sometimes a raw 64-bit number from the input, so libFuzzer's
    /// comparison tracing can still steer it to any value.
    mutating func number() -> UInt64 {
        let k = Int(u8())
        if k < Self.edges.count * 3 { return Self.edges[k % Self.edges.count] }
        return k & 1 == 0 ? u64() : UInt64(u8())
    }

    /// Boundaries of the page and staging arithmetic (sizes, offsets, the 32- and 64-bit limits).
    static let edges: [UInt64] = [
        0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 128, 255, 256, 4095, 4096, 4097, 16384, 65535,
        65536, 1 << 24, UInt64(Int32.max), UInt64(UInt32.max), 1 << 32, UInt64(Int64.max), 1 << 63,
        UInt64.max - 4095, UInt64.max - 15, UInt64.max - 1, UInt64.max,
    ]

    /// Below 192 one of `common` (so a zero byte, and an exhausted input, pick `common[0]`, a valid
    /// value), otherwise `rare` (a boundary or raw value).
    mutating func choose<T>(_ common: [T], rare: (inout ByteReader) -> T) -> T {
        let k = Int(u8())
        return k < 192 ? common[k % common.count] : rare(&self)
    }

    /// A 32-bit field's value: a boundary, or the low bits of a raw one.
    mutating func number32() -> UInt32 { UInt32(truncatingIfNeeded: number()) }
}
