import KVDCore

/// The POSIX shared-memory segment clients map: header, fixed-size pages, then the staging area.
/// The daemon creates it (removing a stale one of the same name left by a crashed run) and unlinks it
/// on shutdown.
public final class Arena: @unchecked Sendable {
    public let name: String
    public let sizing: ArenaSizing
    public let generation: UInt64
    public let base: UnsafeMutableRawPointer
    private let fd: Int32
    private var isClosed = false
    /// True when a segment of the same name existed at start (left by a crashed run) and was replaced.
    public let replacedStale: Bool

    public var geometry: PageGeometry {
        PageGeometry(pagesOffset: sizing.pagesOffset, pageBytes: sizing.pageBytes, pageCount: sizing.pageCount)
    }
    public var pageMemory: PageMemory { PageMemory(base: base, geometry: geometry) }
    public var staging: UnsafeMutableRawPointer { base + sizing.stagingOffset }

    /// Creates the segment `name` ("/kvd-default"), replacing a stale one, and writes its header.
    public init(name: String, sizing: ArenaSizing) throws(KVDError) {
        guard name.hasPrefix("/"), name.count > 1, name.count <= 255, !name.dropFirst().contains("/") else {
            throw .invalidArgument("arena.shm_name: '\(name)' must look like /name (one leading slash, no other)")
        }
        self.name = name
        self.sizing = sizing
        // A segment another live kvd serves must not be replaced: that would cut its clients off.
        if ShmSyscalls.isLockedByLiveProcess(name) {
            throw .failedPrecondition(
                "shared memory \(name) is in use by another running kvd; stop it or choose another arena.shm_name")
        }
        do {
            replacedStale = try ShmSyscalls.unlink(name)
            fd = try ShmSyscalls.createExclusive(name)
            try ShmSyscalls.lock(fd, name)
        } catch {
            throw .internalError("cannot create shared memory \(name): \(error)")
        }
        do {
            try ShmSyscalls.resize(fd, to: sizing.segmentBytes)
            base = try ShmSyscalls.map(fd, size: sizing.segmentBytes)
        } catch {
            ShmSyscalls.close(fd)
            _ = try? ShmSyscalls.unlink(name)
            throw .resourceExhausted("cannot size shared memory \(name) to \(sizing.segmentBytes) bytes: \(error); lower arena.size_bytes or free /dev/shm")
        }
        generation = ShmSyscalls.generationSeed()
        header.write(to: base)
    }

    public var header: ArenaHeader {
        ArenaHeader(
            generation: generation, segmentBytes: UInt64(sizing.segmentBytes), pageBytes: UInt64(sizing.pageBytes),
            pageCount: UInt32(sizing.pageCount), pagesOffset: UInt64(sizing.pagesOffset),
            stagingOffset: UInt64(sizing.stagingOffset), stagingBytes: UInt64(sizing.stagingBytes))
    }

    /// Unmaps and unlinks the segment. Safe to call twice.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        ShmSyscalls.unmap(base, size: sizing.segmentBytes)
        ShmSyscalls.close(fd)
        _ = try? ShmSyscalls.unlink(name)
    }

    deinit { close() }
}
