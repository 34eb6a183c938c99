import Foundation

/// Writes protobuf wire format by hand, for the replies where SwiftProtobuf's generic encoder costs
/// more than the work: a Query of one sequence lists every (layer, head) as a nested message, and
/// building, sizing and encoding ~100 of them per request dominated a metadata-only Query.
/// Proto3 rules: zero scalars and empty bytes are omitted; nested messages are length-prefixed, so
/// their size is computed first (`Size`). Readers accept any field order; this writes ascending.
///
/// The buffer is one malloc'd block of the exact size the caller computed, with `headroom` bytes
/// left free in front so the response envelope can be written there later: the finished message
/// is then handed to the transport as it is (`take`), never copied into a bigger one.
public final class WireWriter {
    private var base: UnsafeMutableRawPointer?
    public let capacity: Int
    /// Bytes written so far, headroom included.
    public private(set) var count: Int
    public let headroom: Int

    public init(capacity: Int, headroom: Int = 0) {
        precondition(capacity >= headroom)
        self.capacity = capacity
        self.headroom = headroom
        base = malloc(max(1, capacity))
        count = headroom
    }

    deinit { free(base) }

    private func reserve(_ n: Int) -> UnsafeMutableRawPointer {
        precondition(count + n <= capacity, "WireWriter: message larger than its computed size")
        defer { count += n }
        return base! + count
    }

    public func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            reserve(1).storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, as: UInt8.self)
            v >>= 7
        }
        reserve(1).storeBytes(of: UInt8(v), as: UInt8.self)
    }

    /// A varint field (uint32/uint64/enum/bool), omitted when 0.
    public func uint(_ field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        varint(UInt64(field << 3))
        varint(value)
    }

    /// The tag and length of a length-delimited field whose `length` bytes the caller writes next.
    public func lengthDelimited(_ field: Int, length: Int) {
        varint(UInt64(field << 3 | 2))
        varint(UInt64(length))
    }

    /// A bytes field of `count` bytes filled in place by `fill`, omitted when empty.
    public func bytes(_ field: Int, count n: Int, _ fill: (UnsafeMutableRawPointer) -> Void) {
        guard n > 0 else { return }
        lengthDelimited(field, length: n)
        fill(reserve(n))
    }

    /// Writes `prefix` just before the body (into the headroom); false when it does not fit.
    public func prepend(_ prefix: [UInt8]) -> Bool {
        guard prefix.count <= headroom, let base else { return false }
        prefix.withUnsafeBytes { (base + headroom - prefix.count).copyMemory(from: $0.baseAddress!, byteCount: prefix.count) }
        return true
    }

    /// The body written after the headroom, as an array (a copy; for small messages and tests).
    public var body: [UInt8] { Array(UnsafeRawBufferPointer(start: base! + headroom, count: count - headroom)) }

    /// Hands the malloc'd block to the caller, who must `free(block)`: the message is
    /// `block + offset ..< block + offset + length`, with `offset = headroom - prefixLength`.
    public func take(prefixLength: Int) -> (block: UnsafeMutableRawPointer, offset: Int, length: Int) {
        let block = base!
        base = nil
        return (block, headroom - prefixLength, count - headroom + prefixLength)
    }

    /// Sizes of fields, for the length prefix of a nested message.
    public enum Size {
        public static func varint(_ value: UInt64) -> Int { value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7 }
        public static func uint(_ field: Int, _ value: UInt64) -> Int {
            value == 0 ? 0 : varint(UInt64(field << 3)) + varint(value)
        }
        public static func bytes(_ field: Int, count: Int) -> Int {
            count == 0 ? 0 : varint(UInt64(field << 3 | 2)) + varint(UInt64(count)) + count
        }
    }

    /// Tag and length of a length-delimited field, as bytes.
    public static func fieldHeader(_ field: Int, length: Int) -> [UInt8] {
        let w = WireWriter(capacity: 20)
        w.lengthDelimited(field, length: length)
        return w.body
    }
}
