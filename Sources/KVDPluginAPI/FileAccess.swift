#if canImport(Glibc)
import Glibc
private let systemRead = Glibc.read
#elseif canImport(Darwin)
import Darwin
private let systemRead = Darwin.read
#endif
import KVDCore

/// Where the files that compaction parameters name (HeadKV's `scores`) may be, and who named them.
///
/// - A file named by a **request** (a client) resolves only inside `directories`
///   (`files.directories` in the config; default: the config file's directory): the name must be
///   relative, without `..` components; symlinks are resolved and the real path must still lie
///   inside the directory. The first directory holding the name wins.
/// - A file named by the **operator** (a policy in the config file) by a relative path is
///   relative to the config file's directory, and its real path must lie inside that directory or
///   one of `directories`. An absolute path is the operator's explicit choice and is not confined
///   (the operator already decides what the daemon reads, plugins included). With no
///   `directories` at all (contexts built by tools and tests) nothing is confined.
public struct FileAccess: Sendable, Equatable {
    public enum Origin: Sendable, Equatable {
        case request, config
    }

    /// The config file's directory ("" = the current directory).
    public let baseDirectory: String
    /// `files.directories`, absolute.
    public let directories: [String]
    /// Names of the parameters whose value the request set (the rest come from a policy or defaults).
    public let requestParams: Set<String>

    public init(baseDirectory: String, directories: [String] = [], requestParams: Set<String> = []) {
        self.baseDirectory = baseDirectory
        self.directories = directories
        self.requestParams = requestParams
    }

    public func origin(of param: String) -> Origin { requestParams.contains(param) ? .request : .config }

    /// A file found for a parameter: its real path (no symlinks), the name to show in messages
    /// (what the client sent; for config files the path as resolved against the config directory)
    /// and who named it.
    public struct Located: Sendable, Equatable {
        public let path: String
        public let name: String
        public let origin: Origin
    }

    /// Why a file could not be used. A request-named file's caller turns every one of these into a
    /// single message, so that errors do not tell which files exist outside the directories.
    public enum Problem: Error, Sendable, Equatable {
        /// An absolute name, a `..` component, an empty name or a NUL byte (requests only).
        case badName
        /// No such file (or a path component is not searchable).
        case missing
        /// The real path (given) is outside every allowed directory.
        case outside(String)
        /// Not a regular file (a directory, FIFO, device, socket).
        case notRegular
        /// Larger than the reader's limit.
        case tooLarge
        /// open or read failed.
        case unreadable
    }

    /// Finds the file `value` of parameter `param` names.
    public func locate(param: String, _ value: String) -> Result<Located, Problem> {
        switch origin(of: param) {
        case .request: return locateRequested(value)
        case .config: return locateConfigured(value)
        }
    }

    /// How messages name the file: what the client sent, or the operator's path as resolved
    /// against the config file's directory.
    public func display(param: String, _ value: String) -> String {
        origin(of: param) == .request ? value : joined(value)
    }

    private func joined(_ value: String) -> String {
        value.hasPrefix("/") || baseDirectory.isEmpty ? value : baseDirectory + "/" + value
    }

    private func locateRequested(_ value: String) -> Result<Located, Problem> {
        let components = value.split(separator: "/", omittingEmptySubsequences: false)
        guard !value.isEmpty, !value.hasPrefix("/"), !value.utf8.contains(0), !components.contains("..") else {
            return .failure(.badName)
        }
        for dir in directories {
            guard let root = Self.realPath(dir), let real = Self.realPath(dir + "/" + value) else { continue }
            if Self.isInside(real, root) { return .success(Located(path: real, name: value, origin: .request)) }
        }
        return .failure(.missing)
    }

    private func locateConfigured(_ value: String) -> Result<Located, Problem> {
        guard !value.isEmpty, !value.utf8.contains(0) else { return .failure(.badName) }
        let path = joined(value)
        guard let real = Self.realPath(path) else { return .failure(.missing) }
        if !directories.isEmpty, !value.hasPrefix("/") {
            let roots = ([baseDirectory.isEmpty ? "." : baseDirectory] + directories).compactMap(Self.realPath)
            guard roots.contains(where: { Self.isInside(real, $0) }) else { return .failure(.outside(real)) }
        }
        return .success(Located(path: real, name: path, origin: .config))
    }

    /// The canonical absolute path (symlinks, `.` and `..` resolved), or nil when it does not exist.
    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    /// Whether real path `path` is strictly below directory `root` (both canonical).
    static func isInside(_ path: String, _ root: String) -> Bool {
        root == "/" ? path != "/" : path.hasPrefix(root + "/")
    }

    /// What identifies a file's contents for caching: device, inode, size and modification time.
    public struct Stamp: Sendable, Equatable {
        let device: UInt64, inode: UInt64, size: Int64, seconds: Int64, nanoseconds: Int64
    }

    /// Opens `file` without following a final symlink and without blocking (a FIFO cannot stall
    /// the request), checks it is a regular file of at most `maxBytes`, and reads it unless its
    /// stamp equals `unchanged` (then the bytes are nil: the caller's cached parse is current).
    public static func readFile(_ file: Located, maxBytes: Int, unless unchanged: Stamp? = nil) -> Result<(Stamp, [UInt8]?), Problem> {
        let fd = open(file.path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return .failure(errno == ENOENT ? .missing : .unreadable) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return .failure(.unreadable) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .failure(.notRegular) }
        guard st.st_size >= 0, st.st_size <= Int64(maxBytes) else { return .failure(.tooLarge) }
        let stamp = Stamp(
            device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
            seconds: Int64(st.st_mtim.tv_sec), nanoseconds: Int64(st.st_mtim.tv_nsec))
        if stamp == unchanged { return .success((stamp, nil)) }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var filled = 0
        while true {
            if filled == bytes.count {
                // The file grew since fstat: read on, up to one byte past the limit.
                guard bytes.count <= maxBytes else { return .failure(.tooLarge) }
                bytes += [UInt8](repeating: 0, count: Swift.min(bytes.count, maxBytes + 1 - bytes.count))
            }
            let n = bytes.withUnsafeMutableBytes { buffer in
                systemRead(fd, buffer.baseAddress! + filled, buffer.count - filled)
            }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return .failure(.unreadable) }
            if n == 0 { break }
            filled += n
        }
        guard filled <= maxBytes else { return .failure(.tooLarge) }
        return .success((stamp, Array(bytes.prefix(filled))))
    }
}
