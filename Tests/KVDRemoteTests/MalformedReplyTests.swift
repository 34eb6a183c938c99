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

    // MARK: - Large values read straight into their array (RESPWire)

    func node(answeringInPieces pieces: [[UInt8]], timeouts: RedisTimeouts = Self.timeouts) throws -> (FakeServer, RedisNodeKV) {
        let server = try FakeServer(inPieces: { _ in pieces })
        return (server, RedisNodeKV(endpoint: RedisEndpoint(host: "127.0.0.1", port: server.port), timeouts: timeouts))
    }

    static let large = (0..<(RESPWire.directBytes + 1000)).map { UInt8(truncatingIfNeeded: $0 &* 7) }

    /// A large value whose header and body arrive split across reads (inside the length digits, in
    /// the middle of the value, before the CRLF) comes back whole.
    @Test func largeValueInPieces() throws {
        let v = Self.large
        let header = Array("$\(v.count)\r\n".utf8)
        for split in [[header, Array(v[..<100]), Array(v[100...]) + b("\r\n")],
                      [Array(header[..<2]), Array(header[2...]) + v + b("\r\n")],
                      [header + v, b("\r"), b("\n")]] {
            let (server, kv) = try node(answeringInPieces: split)
            defer { server.stop() }
            let got = try kv.get(b("k"))
            #expect(got?.count == v.count)
            #expect(got.map { $0 == v } == true)  // not `got == v`: a failure would print 33 KB twice
            #expect(kv.connection.isConnected)
            // The same reply into a sink.
            let sink = CollectingSink(place: 333)
            #expect(try kv.get(b("k"), into: sink) == v.count)
            #expect(sink.bytes == v ? true : false)
            #expect(kv.connection.isConnected)
        }
    }

    /// A large value not followed by CRLF, or followed by bytes nobody asked for: `protocol`, and
    /// the connection (whose stream is no longer in step) is dropped.
    @Test func largeValueBadEndingIsProtocol() throws {
        let v = Self.large
        for reply in [b("$\(v.count)\r\n") + v + b("XY"), b("$\(v.count)\r\n") + v + b("\r\n+OK\r\n")] {
            let (server, kv) = try node(answeringInPieces: [reply])
            defer { server.stop() }
            var error: RemoteError?
            do { _ = try kv.get(b("k")) } catch let e { error = e }  // no #expect(throws:): it would print the value
            #expect(error?.kind == .protocol, "\(String(describing: error))")
            #expect(!kv.connection.isConnected)
            let sinkError = #expect(throws: RemoteError.self) { try kv.get(b("k"), into: CollectingSink(place: 4096)) }
            #expect(sinkError?.kind == .protocol, "\(String(describing: sinkError))")
            #expect(!kv.connection.isConnected)
        }
    }

    /// The server hangs up in the middle of a large value: `unavailable`, nothing half-read returned.
    @Test func largeValueCutOff() throws {
        let v = Self.large
        let (server, kv) = try node(answeringInPieces: [b("$\(v.count)\r\n") + v[..<5000], []])
        defer { server.stop() }
        let error = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(error?.kind == .unavailable)
        #expect(error?.message.contains("closed") == true)
        #expect(!kv.connection.isConnected)
        let sinkError = #expect(throws: RemoteError.self) { try kv.get(b("k"), into: CollectingSink(place: 4096)) }
        #expect(sinkError?.kind == .unavailable)
    }

    /// A large value that stops arriving: the command timeout ends the read.
    @Test func largeValueStalls() throws {
        let v = Self.large
        let (server, kv) = try node(answeringInPieces: [b("$\(v.count)\r\n") + v[..<5000]], timeouts: Self.short)
        defer { server.stop() }
        let start = ContinuousClock.now
        let error = #expect(throws: RemoteError.self) { try kv.get(b("k")) }
        #expect(error?.kind == .unavailable)
        #expect(seconds(since: start) < 1.5)
    }

    /// The header parser on its own: only a complete, plain, large enough `$<len>\r\n` is read
    /// directly; everything else is hiredis' to parse (and reject).
    @Test func largeBulkHeaderParsing() {
        let d = RESPWire.directBytes
        func parse(_ s: String) -> (Int, Int)? { RESPWire.largeBulkHeader(ArraySlice(b(s))).map { ($0.length, $0.headerEnd) } }
        #expect(parse("$\(d)\r\nxyz").map { [$0.0, $0.1] } == [d, "$\(d)\r\n".utf8.count])
        #expect(parse("$\(d - 1)\r\n") == nil)  // small: hiredis reads it
        #expect(parse("$\(d)\r") == nil)  // header not complete yet
        #expect(parse("$\r\n") == nil)
        #expect(parse("$-1\r\n") == nil)
        #expect(parse("$+40000\r\n") == nil)
        #expect(parse("$99999999999999999999999999\r\n") == nil)  // above the ceiling: no overflow
        #expect(parse("$\(RESPWire.maxBulkBytes + 1)\r\n") == nil)
        #expect(parse("+OK\r\n") == nil)
        #expect(RESPWire.largeBulkHeader(ArraySlice(b("x$40000\r\n").dropFirst())).map(\.length) == 40000)  // slices keep their indices
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
