/// Little-endian binary writing and bounds-checked reading for the durability files (journal and
/// snapshot). Reading never traps: every length and count read from a file is checked against the
/// bytes left before anything is allocated, because a torn or corrupt file is an expected input.

/// Why bytes could not be read as a journal or snapshot record.
public struct DurableFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    /// Room for `capacity` bytes up front (large blobs: no reallocation while writing).
    public init(capacity: Int) { bytes.reserveCapacity(capacity) }

    /// Writes into `buffer`'s memory (emptied, its capacity kept; grown to `capacity` if smaller):
    /// a buffer used before has its pages already mapped, a fresh one faults on every page.
    public init(reusing buffer: [UInt8], capacity: Int) {
        bytes = buffer
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    public mutating func f32(_ v: Float) { u32(v.bitPattern) }
    /// A count or size: callers only write values that fit (sizes of in-memory arrays).
    public mutating func count(_ n: Int) { u32(UInt32(n)) }
    public mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        count(utf8.count)
        bytes.append(contentsOf: utf8)
    }
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func raw(_ b: UnsafeRawBufferPointer) { bytes.append(contentsOf: b) }
    /// Replaces bytes already written (a header reserved first and filled in last).
    public mutating func overwrite(at offset: Int, with b: [UInt8]) {
        precondition(offset >= 0 && offset + b.count <= bytes.count)
        bytes.replaceSubrange(offset..<(offset + b.count), with: b)
    }
}

public struct ByteReader {
    private let bytes: [UInt8]
    public private(set) var offset: Int
    private let end: Int

    public init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        self.offset = start
        self.end = end ?? bytes.count
    }

    public var remaining: Int { end - offset }
    public var atEnd: Bool { offset == end }

    private mutating func take(_ n: Int, _ what: String) throws(DurableFormatError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else {
            throw DurableFormatError("\(what): needs \(n) bytes at offset \(offset), \(remaining) left")
        }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    public mutating func u8(_ what: String) throws(DurableFormatError) -> UInt8 { try take(1, what).first! }
    public mutating func bool(_ what: String) throws(DurableFormatError) -> Bool {
        let v = try u8(what)
        guard v <= 1 else { throw DurableFormatError("\(what): \(v) is not a boolean") }
        return v == 1
    }
    public mutating func u32(_ what: String) throws(DurableFormatError) -> UInt32 {
        try take(4, what).reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    public mutating func u64(_ what: String) throws(DurableFormatError) -> UInt64 {
        try take(8, what).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
    public mutating func i32(_ what: String) throws(DurableFormatError) -> Int32 { Int32(bitPattern: try u32(what)) }
    public mutating func f32(_ what: String) throws(DurableFormatError) -> Float { Float(bitPattern: try u32(what)) }

    /// A count of items that each take at least `itemBytes` bytes: checked against what is left, so
    /// a corrupt count cannot make the reader allocate more than the file holds.
    public mutating func count(_ what: String, itemBytes: Int) throws(DurableFormatError) -> Int {
        let n = Int(try u32(what))
        guard n <= remaining / max(itemBytes, 1) else {
            throw DurableFormatError("\(what): \(n) items of \(itemBytes)+ bytes do not fit the \(remaining) bytes left")
        }
        return n
    }

    public mutating func string(_ what: String, max: Int = 4096) throws(DurableFormatError) -> String {
        let n = try count(what, itemBytes: 1)
        guard n <= max else { throw DurableFormatError("\(what): \(n) bytes is longer than \(max)") }
        return String(decoding: try take(n, what), as: UTF8.self)
    }

    public mutating func raw(_ n: Int, _ what: String) throws(DurableFormatError) -> [UInt8] { Array(try take(n, what)) }
    /// Moves past `n` bytes (checked like a read), leaving them where they are.
    public mutating func skip(_ n: Int, _ what: String) throws(DurableFormatError) { _ = try take(n, what) }
}
