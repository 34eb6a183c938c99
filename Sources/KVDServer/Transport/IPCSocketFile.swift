#if canImport(Glibc)
import Glibc
#endif

/// Why an endpoint could not be bound (start-up fails; `kvd` exits with status 1).
struct EndpointError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// An ipc:// endpoint's socket file, which the daemon creates itself and hands to libzmq
/// (ZMQ_USE_FD) instead of letting libzmq bind the path, because libzmq 4.3 unlinks whatever is at
/// the path before binding: a second daemon started by mistake would silently steal the socket of
/// a running one. Here a path is only taken over when it is a socket nobody listens on.
struct IPCSocketFile {
    let path: String
    /// Identity of the file we created, so shutdown removes it only if it is still ours (another
    /// daemon may have replaced it while this one was draining). The change time is part of it
    /// because file systems hand a freed inode number straight to the next file.
    private let identity: [Int]

    /// What is at `path` before binding.
    enum Existing: Equatable {
        case nothing
        /// A socket file nobody listens on (left by a daemon that crashed or was killed).
        case staleSocket
    }

    /// Creates the socket file with `mode`, listening with `backlog`; returns it and the listening
    /// descriptor (non-blocking, close-on-exec). Refuses when a live process listens on `path`, or
    /// `path` is something other than a socket. Removes a stale socket file (reported in `replaced`).
    static func create(path: String, mode: UInt32, backlog: Int32) throws(EndpointError) -> (file: IPCSocketFile, fd: Int32, replaced: Bool) {
        var address = try socketAddress(path)
        let existing = try probe(path, &address)
        if existing == .staleSocket, unlink(path) != 0, errno != ENOENT {
            throw EndpointError("ipc://\(path): cannot remove the stale socket file: \(String(cString: strerror(errno)))")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw EndpointError("ipc://\(path): socket(): \(String(cString: strerror(errno)))") }
        func fail(_ what: String, unlinkFile: Bool) -> EndpointError {
            let text = String(cString: strerror(errno))
            close(fd)
            if unlinkFile { unlink(path) }
            return EndpointError("ipc://\(path): \(what): \(text)")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            if errno == EADDRINUSE {
                close(fd)
                throw EndpointError("ipc://\(path): another process created this socket file just now; is a second kvd starting?")
            }
            throw fail("bind", unlinkFile: false)
        }
        // The mode is final before listen(): until then every connect() is refused, so there is
        // no moment at which the socket is open to more users than server.ipc_mode allows.
        guard chmod(path, mode_t(mode)) == 0 else { throw fail("chmod \(String(mode, radix: 8))", unlinkFile: true) }
        var st = stat()
        guard lstat(path, &st) == 0 else { throw fail("stat", unlinkFile: true) }
        guard listen(fd, backlog) == 0 else { throw fail("listen", unlinkFile: true) }
        return (IPCSocketFile(path: path, identity: identity(st)), fd, existing == .staleSocket)
    }

    /// Removes the socket file unless it is gone or has been replaced by someone else's.
    func removeIfUnchanged() {
        var st = stat()
        guard lstat(path, &st) == 0, Self.identity(st) == identity else { return }
        unlink(path)
    }

    private static func identity(_ st: stat) -> [Int] {
        [Int(st.st_dev), Int(st.st_ino), st.st_ctim.tv_sec, st.st_ctim.tv_nsec]
    }

    private static func socketAddress(_ path: String) throws(EndpointError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw EndpointError("ipc://\(path): a socket path must be 1 to \(capacity - 1) bytes long, got \(bytes.count)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return address
    }

    /// A live listener accepts a connect() (or has a full backlog: EAGAIN); a stale socket file
    /// refuses it. The probe connection is closed at once; a live kvd sees a peer that left
    /// before its handshake, which it ignores.
    private static func probe(_ path: String, _ address: inout sockaddr_un) throws(EndpointError) -> Existing {
        var st = stat()
        if lstat(path, &st) != 0 {
            if errno == ENOENT { return .nothing }
            throw EndpointError("ipc://\(path): cannot check the path: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw EndpointError("ipc://\(path) exists and is not a socket; kvd will not remove it (choose another path or remove it yourself)")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw EndpointError("ipc://\(path): socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc == 0 || errno == EAGAIN || errno == EINPROGRESS {
            throw EndpointError(
                "ipc://\(path): another process (probably a running kvd) is serving on this socket; stop it first, or give this daemon "
                    + "another path in server.endpoints")
        }
        switch errno {
        case ECONNREFUSED: return .staleSocket
        case ENOENT: return .nothing
        default:
            throw EndpointError("ipc://\(path): cannot tell whether a daemon is serving on it (connect: \(String(cString: strerror(errno)))); kvd will not replace it")
        }
    }
}
