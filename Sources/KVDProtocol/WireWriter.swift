/// Writes protobuf wire format by hand, for the replies where SwiftProtobuf's generic encoder costs
/// more than the work: a Query of one sequence lists every (layer, head) as a nested message, and
/// building, sizing and encoding ~100 of them per request dominated a metadata-only Query.
/// Proto3 rules: zero scalars and empty bytes are omitted; nested messages are length-prefixed, so
/// their size is computed first (`Size`). Readers accept any field order; this writes ascending.
public struct WireWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int) { bytes.reserveCapacity(capacity) }

    public mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// A varint field (uint32/uint64/enum/bool), omitted when 0.
    public mutating func uint(_ field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        varint(UInt64(field << 3))
        varint(value)
    }

    /// The tag and length of a length-delimited field whose `length` bytes the caller writes next.
    public mutating func lengthDelimited(_ field: Int, length: Int) {
        varint(UInt64(field << 3 | 2))
        varint(UInt64(length))
    }

    /// A bytes field of `count` bytes filled in place by `fill`, omitted when empty.
    public mutating func bytes(_ field: Int, count: Int, _ fill: (UnsafeMutableRawPointer) -> Void) {
        guard count > 0 else { return }
        lengthDelimited(field, length: count)
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: count))
        bytes.withUnsafeMutableBytes { fill($0.baseAddress! + start) }
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
}
