import Foundation
@testable import KVDRemote
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `RedisNodeKV` and `RedisConnection` against a real redis-server (one per test, on a free loopback
/// port): values round-trip byte for byte, server errors are `rejected`, a dead or stopped node is
/// `unavailable` within the timeouts and is used again once it is back. Serialized: the tests kill and
/// stop servers, and the machine has few cores.
@Suite(.serialized) struct RedisNodeTests {
    static let timeouts = RedisTimeouts(connectMs: 500, commandMs: 400)

    @Test func setGetDeleteExists() throws {
        let servers = try RedisServers()
        let kv = RedisNodeKV(endpoint: servers.endpoint(try servers.startNode()), timeouts: Self.timeouts)
        #expect(try kv.get(b("missing")) == nil)
        #expect(try kv.exists(b("missing")) == false)
        try kv.set(b("a"), b("one"), ttlSeconds: 0)
        try kv.set(b("b"), b("two"), ttlSeconds: 0)
        #expect(try kv.get(b("a")) == b("one"))
        try kv.set(b("a"), b("uno"), ttlSeconds: 0)  // replaces
        #expect(try kv.get(b("a")) == b("uno"))
        #expect(try kv.exists(b("a")))
        #expect(try kv.delete([b("a"), b("b"), b("missing")]) == 2)
        #expect(try kv.delete([]) == 0)
        #expect(try kv.get(b("a")) == nil)
    }

    @Test func binaryKeysAndValues() throws {
        let servers = try RedisServers()
        let kv = RedisNodeKV(endpoint: servers.endpoint(try servers.startNode()), timeouts: Self.timeouts)
        let every = (0...255).map { UInt8($0) } + [0, 0, 13, 10, 0]  // zeros, CR LF, and the rest
        let key: [UInt8] = [0, 1, 0, 0xFF, 13, 10]
        try kv.set(key, every, ttlSeconds: 0)
        #expect(try kv.get(key) == every)
        #expect(try kv.get([0, 1, 0, 0xFF, 13]) == nil)  // a prefix of the key is another key
        // Empty value and empty key are valid.
        try kv.set(b("empty"), [], ttlSeconds: 0)
        #expect(try kv.get(b("empty")) == [])
        try kv.set([], b("for the empty key"), ttlSeconds: 0)
        #expect(try kv.get([]) == b("for the empty key"))
        // An UNLINK of many binary keys.
        let keys = (0..<40).map { [UInt8(0), UInt8($0), 0] }
        for k in keys { try kv.set(k, k, ttlSeconds: 0) }
        #expect(try kv.delete(keys) == 40)
    }

    /// Values on both sides of the size from which `RESPWire` sends an argument from its own memory
    /// and reads a bulk reply straight into its array: each comes back byte for byte.
    @Test func valuesAroundTheDirectSize() throws {
        let servers = try RedisServers()
        let kv = RedisNodeKV(endpoint: servers.endpoint(try servers.startNode()), timeouts: Self.timeouts)
        let edge = RESPWire.directBytes
        for size in [1, edge - 3, edge - 2, edge - 1, edge, edge + 1, RESPWire.chunkBytes - 8, 3 * edge + 5] {
            let value = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ size) }
            try kv.set(b("v\(size)"), value, ttlSeconds: 7)
            #expect(try kv.get(b("v\(size)")).map { $0 == value } == true, "size \(size)")  // not `==` on arrays: a failure would print them
        }
    }

    /// A value read into a sink lands whole and in order, whether it is large (read straight into
    /// the sink's places, at most `sunkPieceBytes` per read) or small (read by hiredis, then copied);
    /// the sink's places may be any size. A missing key never starts the sink.
    @Test func aSinkGetsTheValueInOrder() throws {
        let servers = try RedisServers()
        let kv = RedisNodeKV(endpoint: servers.endpoint(try servers.startNode()), timeouts: RedisTimeouts(connectMs: 500, commandMs: 5000))
        for size in [10, 3 << 20] {
            let value = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            try kv.set(b("o"), value, ttlSeconds: 0)
            let sink = CollectingSink(place: 1000)
            #expect(try kv.get(b("o"), into: sink) == size)
            #expect(sink.bytes.count == size && sink.bytes == value ? true : false, "size \(size)")  // arrays not printed on failure
            #expect(sink.begins == 1)
            #expect(sink.largestLanding <= RESPWire.sunkPieceBytes)
        }
        let sink = CollectingSink(place: 7)
        #expect(try kv.get(b("missing"), into: sink) == nil)
        #expect(sink.begins == 0)
    }

    /// One command with more large arguments than one `sendmsg` takes (1,024 vectors): every
    /// argument arrives, in order.
    @Test func moreLargeArgumentsThanOneSendTakes() throws {
        let servers = try RedisServers()
        let kv = RedisNodeKV(endpoint: servers.endpoint(try servers.startNode()), timeouts: RedisTimeouts(connectMs: 500, commandMs: 5000))
        let n = 1_100
        let values = (0..<n).map { i in [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: RESPWire.directBytes) + [UInt8(i & 0xFF), UInt8(i >> 8)] }
        #expect(try kv.connection.command([b("RPUSH"), b("list")] + values) == .int(Int64(n)))
        for i in [0, 511, 512, 1023, 1024, n - 1] {
            #expect(try kv.connection.command([b("LINDEX"), b("list"), b(String(i))]) == .string(values[i]) ? true : false, "element \(i)")
        }
    }

    @Test func eightMiBValue() throws {
        let servers = try RedisServers()
        let kv = RedisNodeKV(endpoint: servers.endpoint(try servers.startNode()), timeouts: RedisTimeouts(connectMs: 500, commandMs: 5000))
        var value = [UInt8](repeating: 0, count: 8 << 20)
        for i in stride(from: 0, to: value.count, by: 4093) { value[i] = UInt8(truncatingIfNeeded: i &* 31) }
        let start = ContinuousClock.now
        try kv.set(b("big"), value, ttlSeconds: 0)
        let back = try kv.get(b("big"))
        #expect(back == value)
        #expect(seconds(since: start) < 5)
    }

    @Test func ttl() throws {
        let servers = try RedisServers()
        let port = try servers.startNode()
        let kv = RedisNodeKV(endpoint: servers.endpoint(port), timeouts: Self.timeouts)
        try kv.set(b("t"), b("v"), ttlSeconds: 100)
        let ttl = try servers.adminInt(port, "TTL", "t")
        #expect((1...100).contains(ttl))
        try kv.set(b("forever"), b("v"), ttlSeconds: 0)
        #expect(try servers.adminInt(port, "TTL", "forever") == -1)  // -1: exists, no expiry
        // An expired key reads as missing.
        try servers.admin(port, "PEXPIRE", "t", "1")
        Thread.sleep(forTimeInterval: 0.02)
        #expect(try kv.get(b("t")) == nil)
    }

    /// `maxmemory` with `noeviction`: a write that does not fit is refused with -OOM → `rejected`; the
    /// message names the node and command but not the value.
    @Test func serverErrorIsRejected() throws {
        let servers = try RedisServers()
        let port = try servers.startNode()
        let kv = RedisNodeKV(endpoint: servers.endpoint(port), timeouts: RedisTimeouts(connectMs: 500, commandMs: 5000))
        try servers.admin(port, "CONFIG", "SET", "maxmemory", "1mb")
        try servers.admin(port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        let secret = [UInt8](repeating: UInt8(ascii: "Z"), count: 4 << 20)
        let error = #expect(throws: RemoteError.self) { try kv.set(b("too-big"), secret, ttlSeconds: 0) }
        #expect(error?.kind == .rejected)
        #expect(error?.message.contains("OOM") == true)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true && error?.message.contains("SET") == true)
        #expect(error?.message.contains("ZZZZ") == false)
        // A rejection does not break the connection.
        #expect(try kv.get(b("too-big")) == nil)
        // A command on the wrong type is rejected too.
        try servers.admin(port, "CONFIG", "SET", "maxmemory", "0")
        try servers.admin(port, "LPUSH", "list", "x")
        #expect(throws: RemoteError(.rejected, "127.0.0.1:\(port): GET: WRONGTYPE Operation against a key holding the wrong kind of value")) {
            try kv.get(b("list"))
        }
    }

    /// A killed node fails the call at once (connection refused or reset, not a timeout); once a
    /// server is back on the port, the next call reconnects by itself.
    @Test func killedNodeIsUnavailableThenReconnects() throws {
        let servers = try RedisServers()
        let port = try servers.startNode()
        let kv = RedisNodeKV(endpoint: servers.endpoint(port), timeouts: Self.timeouts)
        try kv.set(b("k"), b("v"), ttlSeconds: 0)
        #expect(kv.connection.isConnected)
        try servers.kill(port)
        // A large write on the connection the dead node had: hiredis' write(2) gets EPIPE, and the
        // SIGPIPE that comes with it must not kill the process.
        let write = #expect(throws: RemoteError.self) { try kv.set(b("k"), [UInt8](repeating: 1, count: 8 << 20), ttlSeconds: 0) }
        #expect(write?.kind == .unavailable)
        for _ in 0..<3 {  // reconnects, refused at once
            let start = ContinuousClock.now
            let error = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
            #expect(error?.kind == .unavailable)
            #expect(error?.message.contains("127.0.0.1:\(port): GET") == true)
            #expect(seconds(since: start) < 0.4)
            #expect(!kv.connection.isConnected)
        }
        try servers.restartNode(port)
        #expect(try kv.get(b("k")) == nil)  // a new, empty server
        try kv.set(b("k"), b("again"), ttlSeconds: 0)
        #expect(try kv.get(b("k")) == b("again"))
    }

    /// A stopped node (SIGSTOP: the kernel still accepts connections, nobody answers) costs one
    /// command timeout, not a hang; after SIGCONT the next call works on a fresh connection.
    @Test func stoppedNodeTimesOutThenRecovers() throws {
        let servers = try RedisServers()
        let port = try servers.startNode()
        let pid = try servers.pid(port)
        let kv = RedisNodeKV(endpoint: servers.endpoint(port), timeouts: Self.timeouts)
        try kv.set(b("k"), b("v"), ttlSeconds: 0)
        Glibc.kill(pid, SIGSTOP)
        defer { Glibc.kill(pid, SIGCONT) }
        for _ in 0..<2 {  // on the open connection, then on a new one the kernel accepts
            let start = ContinuousClock.now
            let error = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
            let took = seconds(since: start)
            #expect(error?.kind == .unavailable)
            #expect(error?.message.contains("timeout") == true)
            #expect(took >= 0.35 && took < 1.5, "took \(took) s with a 400 ms command timeout")
        }
        Glibc.kill(pid, SIGCONT)
        #expect(try kv.get(b("k")) == b("v"))
    }

    /// Nothing listens: connect is refused at once, and the error says where and what to check.
    @Test func nothingListening() throws {
        let port = RedisServers.freePorts(1, clusterBus: false)[0]
        let kv = RedisNodeKV(endpoint: RedisEndpoint(host: "127.0.0.1", port: port), timeouts: Self.timeouts)
        let start = ContinuousClock.now
        let error = #expect(throws: RemoteError.self) { try kv.set(b("k"), b("secret-value"), ttlSeconds: 5) }
        #expect(seconds(since: start) < 0.4)
        #expect(error?.kind == .unavailable)
        #expect(error?.message.hasPrefix("127.0.0.1:\(port): SET: connect failed: Connection refused") == true)
        #expect(error?.message.contains("secret") == false)
    }
}

/// A sink that collects a value through places of `place` bytes.
final class CollectingSink: ValueSink {
    let place: Int
    private(set) var bytes: [UInt8] = []
    private(set) var begins = 0
    private(set) var largestLanding = 0
    private var buffer: UnsafeMutableRawBufferPointer
    private var given: [UnsafeMutableRawBufferPointer] = []

    init(place: Int) {
        self.place = place
        buffer = .allocate(byteCount: 1 << 20, alignment: 8)
    }
    deinit { buffer.deallocate() }

    func begin(length: Int) {
        begins += 1
        bytes = []
    }

    func next(limit: Int) -> [UnsafeMutableRawBufferPointer] {
        let total = min(limit, buffer.count)
        given = stride(from: 0, to: total, by: place).map { UnsafeMutableRawBufferPointer(rebasing: buffer[$0..<min(total, $0 + place)]) }
        return given
    }

    func landed(_ count: Int) {
        largestLanding = max(largestLanding, count)
        var left = count
        for g in given where left > 0 {
            let n = min(g.count, left)
            bytes += UnsafeRawBufferPointer(rebasing: g[..<n])
            left -= n
        }
    }
}
