import Foundation
@testable import KVDRemote
import Testing

/// Replies no Redis sends, from a fake server: wrong types are `protocol`, malformed or huge sizes
/// never trap and are bounded by the timeouts, and a broken connection is dropped and made again.
@Suite struct MalformedReplyTests {
    /// Generous: these tests run in parallel on a small machine, and only the two that wait for the
    /// timeout on purpose should ever see one.
    static let timeouts = RedisTimeouts(connectMs: 1000, commandMs: 2000)
    static let short = RedisTimeouts(connectMs: 500, commandMs: 300)

    func node(answering reply: String, timeouts: RedisTimeouts = Self.timeouts) throws -> (FakeServer, RedisNodeKV) {
        let bytes = Array(reply.utf8)
        let server = try FakeServer { _ in bytes }
        return (server, RedisNodeKV(endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port), timeouts: timeouts))
    }

    @Test func wrongReplyTypeIsProtocol() throws {
        let (server, kv) = try node(answering: ":5\r\n")
        defer { server.stop() }
        let e1 = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(e1 == RemoteError(.protocol, "127.0.0.1:\(server.port): GET: expected a bulk string or nil, got an integer"))
        let e2 = #expect(throws: RemoteError.self) { try kv.set(b("k"), b("v"), ttlSeconds: 0) }
        #expect(e2?.kind == .protocol)
        // The reply was well-formed: the connection stays up.
        #expect(kv.connection.isConnected)
    }

    @Test func negativeCountIsProtocol() throws {
        let (server, kv) = try node(answering: ":-1\r\n")
        defer { server.stop() }
        let error = #expect(throws: RemoteError.self) { try kv.delete([b("k")]) }
        #expect(error?.kind == .protocol)
    }

    @Test func garbageIsProtocolAndDropsTheConnection() throws {
        let (server, kv) = try node(answering: "!nonsense\r\n")
        defer { server.stop() }
        let error = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(error?.kind == .protocol)
        #expect(error?.message.contains("protocol error") == true)
        #expect(!kv.connection.isConnected)
    }

    /// hiredis 0.14 allows 7 levels of nested arrays; deeper is its protocol error.
    @Test func tooDeepIsProtocol() throws {
        let (server, kv) = try node(answering: String(repeating: "*1\r\n", count: 9) + ":1\r\n")
        defer { server.stop() }
        let error = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(error?.kind == .protocol)
    }

    /// A declared bulk length of 1 TB: hiredis waits for bytes that never come, so the command
    /// timeout ends it — no allocation of the declared size, no trap.
    @Test func hugeDeclaredLengthEndsAtTheTimeout() throws {
        let (server, kv) = try node(answering: "$1000000000000\r\nabc", timeouts: Self.short)
        defer { server.stop() }
        let start = ContinuousClock.now
        let error = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(error?.kind == .unavailable)
        #expect(seconds(since: start) < 1.5)
        #expect(!kv.connection.isConnected)
    }

    /// A declared array of 10^12 elements: hiredis either fails to allocate the element vector
    /// (`protocol`) or, where memory is overcommitted, waits for elements until the timeout.
    @Test func hugeDeclaredArrayFailsCleanly() throws {
        let (server, kv) = try node(answering: "*1000000000000\r\n", timeouts: Self.short)
        defer { server.stop() }
        let start = ContinuousClock.now
        #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(seconds(since: start) < 1.5)
    }

    /// Half a reply, then the server hangs up: `unavailable`; the next call connects again.
    @Test func truncatedReplyThenReconnect() throws {
        let calls = Counter()
        let server = try FakeServer { _ in
            calls.next() == 0 ? nil : Array("$3\r\nabc\r\n".utf8)  // first connection: close at once
        }
        defer { server.stop() }
        let kv = RedisNodeKV(endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port), timeouts: Self.timeouts)
        let error = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(error?.kind == .unavailable)
        #expect(error?.message.contains("closed") == true)
        #expect(try kv.get(b("k")) == b("abc"))
    }

    // MARK: - Cluster routing against fake nodes

    /// A node that always redirects to itself: the call stops after `maxRedirections`.
    @Test func redirectionLoopIsBounded() throws {
        let portBox = Counter()
        let server = try FakeServer { request in
            if request.has("SLOTS") {
                return Array("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$0\r\n\r\n:\(portBox.value)\r\n".utf8)
            }
            return Array("-MOVED 12182 :\(portBox.value)\r\n".utf8)
        }
        defer { server.stop() }
        let port = server.port
        portBox.set(port)
        let kv = RedisClusterKV(seeds: [RedisEndpoint(host: "127.0.0.1", port: port)], options: .init(timeouts: Self.timeouts, maxRedirections: 3))
        let error = #expect(throws: RemoteError.self) { try kv.get(b("foo")) }
        #expect(error?.kind == .unavailable)
        #expect(error?.message.contains("still redirected after 3 redirections") == true)
        #expect(kv.counters.moved == 3)
        #expect(kv.owner(ofSlot: 12182) == RedisEndpoint(host: "127.0.0.1", port: port))
    }

    @Test func malformedRedirectionIsProtocol() throws {
        let portBox = Counter()
        let server = try FakeServer { request in
            request.has("SLOTS")
                ? Array("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:\(portBox.value)\r\n".utf8)
                : Array("-MOVED 99999 127.0.0.1:1\r\n".utf8)
        }
        defer { server.stop() }
        portBox.set(server.port)
        let kv = RedisClusterKV(seeds: [RedisEndpoint(host: "127.0.0.1", port: server.port)], options: .init(timeouts: Self.timeouts))
        let error = #expect(throws: RemoteError.self) { try kv.get(b("foo")) }
        #expect(error?.kind == .protocol, "\(String(describing: error))")
        #expect(error?.message.contains("malformed redirection") == true)
    }

    /// A seed that answers `CLUSTER SLOTS` with nonsense: `protocol`, naming the seed.
    @Test func malformedSlotMapIsProtocol() throws {
        let (server, _) = try node(answering: "*1\r\n*3\r\n:0\r\n:99999\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n")
        defer { server.stop() }
        let kv = RedisClusterKV(seeds: [RedisEndpoint(host: "127.0.0.1", port: server.port)], options: .init(timeouts: Self.timeouts))
        let error = #expect(throws: RemoteError.self) { try kv.get(b("foo")) }
        #expect(error?.kind == .protocol)
        #expect(error?.message.contains("127.0.0.1:\(server.port): CLUSTER: slot range 0") == true)
    }

    /// No seed is up: `unavailable` at once (connections refused), listing every seed.
    @Test func noSeedUp() throws {
        let ports = RedisServers.freePorts(2, clusterBus: false)
        let kv = RedisClusterKV(seeds: ports.map { RedisEndpoint(host: "127.0.0.1", port: $0) }, options: .init(timeouts: Self.timeouts))
        let start = ContinuousClock.now
        let error = #expect(throws: RemoteError.self) { try kv.set(b("k"), b("v"), ttlSeconds: 0) }
        #expect(seconds(since: start) < 0.5)
        #expect(error?.kind == .unavailable)
        #expect(error?.message.contains(":\(ports[0]): CLUSTER: connect failed") == true)
        #expect(error?.message.contains(":\(ports[1]): CLUSTER: connect failed") == true)
        // Within the refresh interval, the next call fails fast with the same reason.
        let again = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(again == error)
    }
}

/// A counter shared with a fake server's thread.
final class Counter: @unchecked Sendable {  // safe: every access holds `lock`
    private let lock = NSLock()
    private var n = 0
    func next() -> Int { lock.withLock { defer { n += 1 }; return n } }
    var value: Int { lock.withLock { n } }
    func set(_ v: Int) { lock.withLock { n = v } }
}
