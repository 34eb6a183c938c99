/// How a segment of a given size splits into header, pages and staging area. Pure arithmetic, shared
/// by the config check (so a too-small arena is a config error naming the key) and the arena itself.
public struct ArenaSizing: Sendable, Equatable {
    /// Bytes reserved at offset 0 for the segment header.
    public static let headerBytes = 4096

    public let segmentBytes: Int
    public let pageBytes: Int
    public let pageCount: Int
    public let pagesOffset: Int
    public let stagingOffset: Int
    public let stagingBytes: Int

    /// Page bytes are the largest model's page rounded up to 64, so every page starts cache-line
    /// aligned; staging is rounded up to 4 KiB. Throws when not one page fits.
    public static func compute(segmentBytes: Int, stagingBytes: Int, models: [ModelLayout]) throws(KVDError) -> ArenaSizing {
        let largest = models.map(\.pageBytesUsed).max() ?? 0
        let pageBytes = (largest + 63) / 64 * 64
        guard pageBytes > 0 else { throw .invalidArgument("models: at least one model is needed to size pages") }
        let stagingAligned = (stagingBytes + 4095) / 4096 * 4096
        let room = segmentBytes - headerBytes - stagingAligned
        let pageCount = room > 0 ? room / pageBytes : 0
        guard pageCount >= 1 else {
            throw .invalidArgument(
                "arena.size_bytes: \(segmentBytes) bytes is too small for one page: the \(headerBytes)-byte header, "
                    + "arena.staging_bytes (\(stagingAligned)) and one \(pageBytes)-byte page need \(headerBytes + stagingAligned + pageBytes)")
        }
        guard pageCount <= Int(UInt32.max) else { throw .invalidArgument("arena.size_bytes: more than 2^32 pages") }
        let stagingOffset = headerBytes + pageCount * pageBytes
        return ArenaSizing(
            segmentBytes: segmentBytes, pageBytes: pageBytes, pageCount: pageCount,
            pagesOffset: headerBytes, stagingOffset: stagingOffset, stagingBytes: stagingAligned)
    }
}
