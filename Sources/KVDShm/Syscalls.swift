#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The only file in kvd that calls libc for shared memory. Each function wraps one call (named in its
/// doc comment) and turns errno into a message that says what failed and what to check.
enum ShmSyscalls {
    struct Failure: Error, CustomStringConvertible {
        let call: String
        let errno: Int32
        var description: String { "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
    }

    /// `shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600)`: a new segment only this user can open.
    static func createExclusive(_ name: String) throws -> Int32 {
        let fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0o600)
        if fd < 0 { throw Failure(call: "shm_open(\(name))", errno: errno) }
        return fd
    }

    /// Sets the segment's permission bits (`fchmod`, not subject to the umask) and, when asked, its
    /// owner (`fchown`, which needs the privilege to give files away).
    static func setAccess(_ fd: Int32, _ name: String, mode: UInt32, uid: UInt32?, gid: UInt32?) throws {
        if fchmod(fd, mode_t(mode)) != 0 { throw Failure(call: "fchmod(\(name))", errno: errno) }
        if uid != nil || gid != nil {
            if fchown(fd, uid ?? UInt32.max, gid ?? UInt32.max) != 0 { throw Failure(call: "fchown(\(name))", errno: errno) }
        }
    }

    /// Whether a segment `name` exists and a live process holds its lock (`shm_open` + `flock(LOCK_EX |
    /// LOCK_NB)`). A segment nobody locks was left by a crashed run.
    static func isLockedByLiveProcess(_ name: String) -> Bool {
        let fd = shm_open(name, O_RDWR, 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        return flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK
    }

    /// `shm_open(name, O_RDWR)` of an existing segment; nil when there is none.
    static func openExisting(_ name: String) throws -> Int32? {
        let fd = shm_open(name, O_RDWR, 0)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw Failure(call: "shm_open(\(name))", errno: errno)
        }
        return fd
    }

    /// `fstat(fd).st_size`.
    static func size(_ fd: Int32, _ name: String) throws -> Int {
        var st = stat()
        if fstat(fd, &st) != 0 { throw Failure(call: "fstat(\(name))", errno: errno) }
        return Int(st.st_size)
    }

    /// `flock(fd, LOCK_EX | LOCK_NB)`: marks the segment as served while this process lives (the
    /// kernel drops the lock when it exits, however it exits).
    static func lock(_ fd: Int32, _ name: String) throws {
        if flock(fd, LOCK_EX | LOCK_NB) != 0 { throw Failure(call: "flock(\(name))", errno: errno) }
    }

    /// `shm_unlink(name)`; returns false when there was no such segment.
    @discardableResult
    static func unlink(_ name: String) throws -> Bool {
        if shm_unlink(name) == 0 { return true }
        if errno == ENOENT { return false }
        throw Failure(call: "shm_unlink(\(name))", errno: errno)
    }

    /// `ftruncate` then `posix_fallocate`: sets the size and reserves the memory now, so a full
    /// /dev/shm fails here with a clear error instead of SIGBUS on the first write to a page.
    static func resize(_ fd: Int32, to size: Int) throws {
        if ftruncate(fd, off_t(size)) != 0 { throw Failure(call: "ftruncate(\(size))", errno: errno) }
        #if os(Linux)
        let rc = posix_fallocate(fd, 0, off_t(size))
        if rc != 0 { throw Failure(call: "posix_fallocate(\(size)) on /dev/shm", errno: rc) }
        #endif
    }

    /// `mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`.
    static func map(_ fd: Int32, size: Int) throws -> UnsafeMutableRawPointer {
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw Failure(call: "mmap(\(size))", errno: errno) }
        return p
    }

    /// `munmap(base, size)`.
    static func unmap(_ base: UnsafeMutableRawPointer, size: Int) { munmap(base, size) }

    /// `close(fd)`.
    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// `getpid()` and the wall clock in nanoseconds, mixed into the arena generation.
    static func generationSeed() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec) &+ UInt64(getpid()) << 48
    }
}
