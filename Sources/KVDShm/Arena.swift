import KVDCore
import Synchronization

/// The POSIX shared-memory segment clients map: header, fixed-size pages, then the staging area.
/// The daemon creates it (removing a stale one of the same name left by a crashed run) and unlinks it
/// on shutdown.
///
/// the unchecked Sendable conformance: `base` points at shared memory that every handler reads and writes, but
/// each byte range belongs to one sequence (or one staging buffer), touched only on that sequence's
/// queue; the mapping itself is created in `init` and only removed by `close`, which the server
/// calls once no worker can run (after the drain, see `Server.run`). `isClosed` is behind a Mutex.
public final class Arena: @unchecked Sendable {  // safe: see above; lifecycle behind a Mutex
    public let name: String
    public let sizing: ArenaSizing
    public let generation: UInt64
    public let base: UnsafeMutableRawPointer
    private let fd: Int32
    private struct Lifecycle {
        var unmapped = false
        var unlinked = false
    }
    private let lifecycle = Mutex(Lifecycle())
    /// True when a segment of the same name existed at start (left by a crashed run) and was replaced.
    public let replacedStale: Bool
    /// True when the segment was left by an earlier kvd and kept as it was (`adopting:`), pages
    /// and header included.
    public let adopted: Bool

    public var geometry: PageGeometry {
        PageGeometry(pagesOffset: sizing.pagesOffset, pageBytes: sizing.pageBytes, pageCount: sizing.pageCount)
    }
    public var pageMemory: PageMemory { PageMemory(base: base, geometry: geometry) }
    public var staging: UnsafeMutableRawPointer { base + sizing.stagingOffset }

    /// Creates the segment `name` ("/kvd-default"), replacing a stale one, and writes its header.
    /// `mode`, `uid` and `gid` set who may open the segment (default: owner only, the daemon's user).
    public init(name: String, sizing: ArenaSizing, mode: UInt32 = 0o600, uid: UInt32? = nil, gid: UInt32? = nil) throws(KVDError) {
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
            try ShmSyscalls.setAccess(fd, name, mode: mode, uid: uid, gid: gid)
        } catch {
            ShmSyscalls.close(fd)
            _ = try? ShmSyscalls.unlink(name)
            throw .permissionDenied("cannot set the owner or mode of shared memory \(name): \(error); check the tenant's shm.uid, shm.gid and shm.mode (chown needs root)")
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
        adopted = false
        header.write(to: base)
    }

    /// Maps the segment `name` an earlier kvd left, as it is (header, pages, staging), when its
    /// header matches `sizing`; nil when there is no such segment. A segment a live kvd serves,
    /// or one of another layout, is refused with what differs (start with --fresh to replace it).
    public init?(adopting name: String, sizing: ArenaSizing) throws(KVDError) {
        if ShmSyscalls.isLockedByLiveProcess(name) {
            throw .failedPrecondition(
                "shared memory \(name) is in use by another running kvd; stop it or choose another arena.shm_name")
        }
        let opened: Int32?
        do { opened = try ShmSyscalls.openExisting(name) } catch { throw .internalError("cannot open shared memory \(name): \(error)") }
        guard let fd = opened else { return nil }
        do {
            try ShmSyscalls.lock(fd, name)
            let size = try ShmSyscalls.size(fd, name)
            guard size == sizing.segmentBytes else {
                throw KVDError.failedPrecondition(
                    "shared memory \(name) left by an earlier kvd is \(size) bytes; this config makes \(sizing.segmentBytes) (arena.size_bytes, staging_bytes, models); start with --fresh to replace it (its sequences are lost) or restore the old config")
            }
            base = try ShmSyscalls.map(fd, size: size)
        } catch let e as KVDError {
            ShmSyscalls.close(fd)
            throw e
        } catch {
            ShmSyscalls.close(fd)
            throw .internalError("cannot map shared memory \(name): \(error)")
        }
        self.name = name
        self.sizing = sizing
        self.fd = fd
        replacedStale = false
        adopted = true
        let wanted = ArenaHeader(
            generation: 0, segmentBytes: UInt64(sizing.segmentBytes), pageBytes: UInt64(sizing.pageBytes),
            pageCount: UInt32(sizing.pageCount), pagesOffset: UInt64(sizing.pagesOffset),
            stagingOffset: UInt64(sizing.stagingOffset), stagingBytes: UInt64(sizing.stagingBytes))
        guard let found = ArenaHeader.read(from: base) else {
            ShmSyscalls.unmap(base, size: sizing.segmentBytes)
            ShmSyscalls.close(fd)
            throw .failedPrecondition(
                "shared memory \(name) has no kvd header of layout version \(ArenaHeader.layoutVersion); start with --fresh to replace it")
        }
        var same = found
        same.generation = 0
        guard same == wanted else {
            ShmSyscalls.unmap(base, size: sizing.segmentBytes)
            ShmSyscalls.close(fd)
            throw .failedPrecondition(
                "shared memory \(name) was laid out as \(found.pageCount) pages of \(found.pageBytes) bytes, \(found.stagingBytes) staging bytes; this config needs \(sizing.pageCount) of \(sizing.pageBytes), \(sizing.stagingBytes); start with --fresh to replace it (its sequences are lost) or restore the old config")
        }
        generation = found.generation
    }

    public var header: ArenaHeader {
        ArenaHeader(
            generation: generation, segmentBytes: UInt64(sizing.segmentBytes), pageBytes: UInt64(sizing.pageBytes),
            pageCount: UInt32(sizing.pageCount), pagesOffset: UInt64(sizing.pagesOffset),
            stagingOffset: UInt64(sizing.stagingOffset), stagingBytes: UInt64(sizing.stagingBytes))
    }

    /// Unmaps and unlinks the segment; `keepSegment` leaves the name (and pages) for a later kvd to
    /// adopt (durability). Safe to call twice.
    public func close(keepSegment: Bool = false) {
        let (unmap, unlink) = lifecycle.withLock { s in
            defer { (s.unmapped, s.unlinked) = (true, s.unlinked || !keepSegment) }
            return (!s.unmapped, !s.unlinked && !keepSegment)
        }
        if unlink { _ = try? ShmSyscalls.unlink(name) }
        if unmap {
            ShmSyscalls.unmap(base, size: sizing.segmentBytes)
            ShmSyscalls.close(fd)
        }
    }

    /// Removes the name but keeps the mapping: for a shutdown that gave up waiting for workers,
    /// which may still read or write pages until the process exits (or this object is freed, which
    /// cannot happen while a worker holds it).
    public func unlinkKeepingMapping() {
        let unlink = lifecycle.withLock { s in
            defer { s.unlinked = true }
            return !s.unlinked
        }
        if unlink { _ = try? ShmSyscalls.unlink(name) }
    }

    deinit { close() }
}
