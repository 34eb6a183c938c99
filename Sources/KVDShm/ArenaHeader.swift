import KVDCore

/// The fixed header at offset 0 of the segment, so a client that only has the segment can check what
/// it mapped. Layout documented in docs/PROTOCOL.md ("Shared memory"); all fields little-endian.
public struct ArenaHeader: Equatable, Sendable {
    public static let magic: [UInt8] = Array("KVDARENA".utf8)
    public static let layoutVersion: UInt32 = 1
    /// Bytes reserved for the header; pages start after it (page-aligned).
    public static let size = ArenaSizing.headerBytes

    public var generation: UInt64
    public var segmentBytes: UInt64
    public var pageBytes: UInt64
    public var pageCount: UInt32
    public var pagesOffset: UInt64
    public var stagingOffset: UInt64
    public var stagingBytes: UInt64

    func write(to base: UnsafeMutableRawPointer) {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.size)
        for (i, b) in Self.magic.enumerated() { base.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
        base.storeBytes(of: Self.layoutVersion.littleEndian, toByteOffset: 8, as: UInt32.self)
        base.storeBytes(of: UInt32(Self.size).littleEndian, toByteOffset: 12, as: UInt32.self)
        base.storeBytes(of: generation.littleEndian, toByteOffset: 16, as: UInt64.self)
        base.storeBytes(of: segmentBytes.littleEndian, toByteOffset: 24, as: UInt64.self)
        base.storeBytes(of: pageBytes.littleEndian, toByteOffset: 32, as: UInt64.self)
        base.storeBytes(of: pageCount.littleEndian, toByteOffset: 40, as: UInt32.self)
        base.storeBytes(of: pagesOffset.littleEndian, toByteOffset: 48, as: UInt64.self)
        base.storeBytes(of: stagingOffset.littleEndian, toByteOffset: 56, as: UInt64.self)
        base.storeBytes(of: stagingBytes.littleEndian, toByteOffset: 64, as: UInt64.self)
    }

    /// Reads a header back; nil when the magic or layout version does not match.
    public static func read(from base: UnsafeRawPointer) -> ArenaHeader? {
        for (i, b) in magic.enumerated() where base.load(fromByteOffset: i, as: UInt8.self) != b { return nil }
        guard UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) == layoutVersion else { return nil }
        func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
        return ArenaHeader(
            generation: u64(16), segmentBytes: u64(24), pageBytes: u64(32),
            pageCount: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 40, as: UInt32.self)),
            pagesOffset: u64(48), stagingOffset: u64(56), stagingBytes: u64(64))
    }
}
