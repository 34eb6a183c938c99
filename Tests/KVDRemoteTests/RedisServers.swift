import Foundation
import KVDRemote
#if canImport(Glibc)
import Glibc
#endif

/// Throwaway redis-server processes for one test, started and stopped with scripts/redis.sh in a
/// temporary directory on free loopback ports. `deinit` stops them all and removes the directory.
///
/// A machine without redis-server fails the test (with the reason) instead of skipping it: CI
/// installs it, and a skipped suite would hide a broken setup.
final class RedisServers {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The package root: the tests run from it, but finding it from this file works from anywhere.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let host = "127.0.0.1"

    let dir: String

    init() throws {
        guard Self.onPath("redis-server"), Self.onPath("redis-cli") else {
            throw Failure(description: "redis-server or redis-cli is not installed: run scripts/install-deps.sh (it installs redis-server, redis-tools and libhiredis-dev)")
        }
        dir = NSTemporaryDirectory() + "kvd-redis-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    deinit {
        try? script(["stop", dir])
        try? FileManager.default.removeItem(atPath: dir)
    }

    func endpoint(_ port: Int) -> RedisEndpoint { RedisEndpoint(host: Self.host, port: port) }

    /// A single node on a free port (another port is tried if one was taken in the meantime).
    func startNode(_ options: [String] = []) throws -> Int {
        try withFreePorts(1, clusterBus: false) { ports in try script(["start-node", dir, String(ports[0])] + options) }[0]
    }

    /// A 3-master cluster without replicas, ready (`cluster_state:ok` on every node).
    func startCluster() throws -> [Int] {
        try withFreePorts(3, clusterBus: true) { ports in try script(["start-cluster", dir] + ports.map(String.init)) }
    }

    func restartNode(_ port: Int) throws { try script(["start-node", dir, String(port)]) }
    func restartClusterNode(_ port: Int) throws { try script(["start-cluster-node", dir, String(port)]) }
    func kill(_ port: Int) throws { try script(["kill-node", dir, String(port)]) }

    /// The node's process id (from its pid file), to stop and continue it.
    func pid(_ port: Int) throws -> pid_t {
        let text = try String(contentsOfFile: "\(dir)/redis-\(port).pid", encoding: .utf8)
        guard let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw Failure(description: "bad pid file for \(port)") }
        return pid
    }

    /// An admin command through a fresh connection (so it does not disturb the client under test).
    @discardableResult
    func admin(_ port: Int, _ args: String...) throws -> RedisReply { try admin(port, args) }

    @discardableResult
    func admin(_ port: Int, _ args: [String]) throws -> RedisReply {
        try RedisConnection(endpoint: endpoint(port), timeouts: RedisTimeouts(connectMs: 1000, commandMs: 5000))
            .command(args.map { Array($0.utf8) })
    }

    func adminInt(_ port: Int, _ args: String...) throws -> Int {
        let c = RedisConnection(endpoint: endpoint(port), timeouts: RedisTimeouts(connectMs: 1000, commandMs: 5000))
        guard case .int(let n) = try c.command(args.map { Array($0.utf8) }) else { throw Failure(description: "\(args) did not return an integer") }
        return Int(n)
    }

    func adminString(_ port: Int, _ args: String...) throws -> String {
        let c = RedisConnection(endpoint: endpoint(port), timeouts: RedisTimeouts(connectMs: 1000, commandMs: 5000))
        switch try c.command(args.map { Array($0.utf8) }) {
        case .string(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        case let other: throw Failure(description: "\(args) returned \(other)")
        }
    }

    // MARK: - Helpers

    /// Runs `bash scripts/redis.sh args…` and waits for it; its stderr is the error on failure.
    /// posix_spawn with an empty signal mask and default signal actions, not Foundation's Process:
    /// tests run on dispatch threads, which block most signals, and a child inherits its parent
    /// thread's mask — with Process the script never saw SIGCHLD (so the test waited forever on it)
    /// and redis-server ignored SIGTERM.
    private func script(_ args: [String]) throws {
        let errPath = "\(dir)/redis-sh-\(UUID().uuidString).err"
        defer { unlink(errPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv = (["bash", Self.root + "/scripts/redis.sh"] + args).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid = pid_t()
        let rc = posix_spawnp(&pid, "bash", &actions, &attributes, argv + [nil], environ)
        guard rc == 0 else { throw Failure(description: "posix_spawnp(bash): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = status & 0x7F == 0, code = (status >> 8) & 0xFF  // WIFEXITED, WEXITSTATUS
        guard exited && code == 0 else {
            let text = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            throw Failure(description: "scripts/redis.sh \(args.joined(separator: " ")) failed (status \(status)): \(text)")
        }
    }

    /// Runs `start` with `count` ports that were free a moment ago; on failure (a port taken since)
    /// tries other ports, twice.
    private func withFreePorts(_ count: Int, clusterBus: Bool, _ start: ([Int]) throws -> Void) throws -> [Int] {
        var lastError: Error?
        for _ in 0..<3 {
            let ports = Self.freePorts(count, clusterBus: clusterBus)
            do {
                try start(ports)
                return ports
            } catch {
                lastError = error
                try? script(["stop", dir])
            }
        }
        throw lastError!
    }

    /// Ports that can be bound on loopback now, with PORT+10000 (the cluster bus) too when asked.
    /// Both stay below Linux's default ephemeral range (32768 and up): there, an outgoing connection
    /// (or a FakeServer's kernel-chosen port) could take the port between this check and its use.
    static func freePorts(_ count: Int, clusterBus: Bool) -> [Int] {
        var out: [Int] = []
        while out.count < count {
            let p = Int.random(in: 20000..<22768)
            if out.contains(p) || out.contains(p + 10000) || out.contains(p - 10000) { continue }
            if canBind(p) && (!clusterBus || canBind(p + 10000)) { out.append(p) }
        }
        return out
    }

    private static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(host)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    private static func onPath(_ tool: String) -> Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
    }
}

/// Bytes of a string, for keys and values.
func b(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Seconds since `start`, for timing bounds.
func seconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
