#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The journal's only calls into libc for files. Each wraps one call and turns errno into a
/// message naming the call and the path.
enum FileSyscalls {
    struct Failure: Error, CustomStringConvertible {
        let call: String
        let errno: Int32
        var description: String { "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
    }

    /// `open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600)`.
    static func openAppend(_ path: String) throws(Failure) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        if fd < 0 { throw Failure(call: "open(\(path))", errno: errno) }
        return fd
    }

    /// `open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)`.
    static func create(_ path: String) throws(Failure) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { throw Failure(call: "open(\(path))", errno: errno) }
        return fd
    }

    /// The whole file, or nil when it does not exist (`open` + `read` until end of file).
    static func readAll(_ path: String) throws(Failure) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw Failure(call: "open(\(path))", errno: errno)
        }
        defer { _ = close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(call: "read(\(path))", errno: errno)
            }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
    }

    /// `write` until every byte is in the kernel (retrying short writes and EINTR). Once it
    /// returns, the bytes survive this process dying; only a kernel crash or power loss loses them.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws(Failure) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(call: "write(\(path))", errno: errno)
            }
            done += n
        }
    }

    /// `ftruncate(fd, size)`: cuts a torn tail off after recovery.
    static func truncate(_ fd: Int32, to size: Int, _ path: String) throws(Failure) {
        if ftruncate(fd, off_t(size)) != 0 { throw Failure(call: "ftruncate(\(path), \(size))", errno: errno) }
    }

    /// `rename(from, to)`: atomic replacement within one file system.
    static func rename(_ from: String, _ to: String) throws(Failure) {
        if Glibc.rename(from, to) != 0 { throw Failure(call: "rename(\(from), \(to))", errno: errno) }
    }

    /// `unlink(path)`; a missing file is fine.
    static func remove(_ path: String) throws(Failure) {
        if unlink(path) != 0 && errno != ENOENT { throw Failure(call: "unlink(\(path))", errno: errno) }
    }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }
}
