@testable import KVDRemote
import Testing

/// The pure parts of cluster routing: key slots (vectors from `redis-cli CLUSTER KEYSLOT` on Redis
/// 7.0), endpoint parsing, and `CLUSTER SLOTS` parsing with its range checks.
@Suite struct ClusterKeySlotTests {
    @Test func crc16IsXmodem() {
        #expect(ClusterKeySlot.crc16(b("123456789")[...]) == 0x31C3)  // the CRC catalogue's check value
        #expect(ClusterKeySlot.crc16([][...]) == 0)
    }

    @Test(arguments: [
        ("foo", 12182), ("bar", 5061), ("", 0), ("a", 15495), ("123456789", 12739), ("kvd:seq:42", 12740),
        // Hash tags: the first `{` and the first `}` after it, only when something is between them.
        ("{user1000}.following", 3443), ("{user1000}.followers", 3443), ("{a}b", 15495),
        ("foo{}{bar}", 8363), ("foo{{bar}}zap", 4015), ("foo{bar}{zap}", 5061),
        ("{}", 15257), ("{", 4092), ("}", 12090),
    ])
    func slotsMatchRedis(key: String, slot: Int) {
        #expect(ClusterKeySlot.of(b(key)) == slot)
    }

    @Test func hashTagRules() {
        #expect(ClusterKeySlot.hashedPart(of: b("{user1000}.following")) == b("user1000")[...])
        #expect(ClusterKeySlot.hashedPart(of: b("foo{}{bar}")) == b("foo{}{bar}")[...])  // empty first tag: whole key
        #expect(ClusterKeySlot.hashedPart(of: b("foo{{bar}}zap")) == b("{bar")[...])
        #expect(ClusterKeySlot.hashedPart(of: b("x{y")) == b("x{y")[...])
        // Binary keys: only the bytes `{` and `}` matter.
        let key: [UInt8] = [0, 0xFF, UInt8(ascii: "{"), 0, 1, UInt8(ascii: "}"), 9]
        #expect(ClusterKeySlot.of(key) == ClusterKeySlot.of([UInt8(ascii: "{"), 0, 1, UInt8(ascii: "}")]))
        #expect((0..<2000).allSatisfy { ClusterKeySlot.of(b("key\($0)")) < ClusterKeySlot.count })
    }

    @Test func endpointParsing() {
        #expect(RedisEndpoint(parsing: "127.0.0.1:7000") == RedisEndpoint(host: "127.0.0.1", port: 7000))
        #expect(RedisEndpoint(parsing: ":7000", defaultHost: "10.0.0.1") == RedisEndpoint(host: "10.0.0.1", port: 7000))
        #expect(RedisEndpoint(parsing: ":7000") == nil)
        #expect(RedisEndpoint(parsing: "[::1]:7000")?.host == "::1")
        #expect(RedisEndpoint(parsing: "::1:7000") == RedisEndpoint(host: "::1", port: 7000))
        #expect(RedisEndpoint(host: "::1", port: 7000).description == "[::1]:7000")
        for bad in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "127.0.0.1:-1", "h:99999999999999999999"] {
            #expect(RedisEndpoint(parsing: bad) == nil, "\(bad)")
        }
    }

    static let source = RedisEndpoint(host: "10.1.1.1", port: 7000)

    func master(_ host: String, _ port: Int64) -> RedisReply { .array([.string(b(host)), .int(port), .string(b("id"))]) }

    @Test func slotMapParsing() throws {
        let reply = RedisReply.array([
            .array([.int(0), .int(5460), master("", 7000), master("10.1.1.9", 7100)]),  // "" = the source's host; a replica after
            .array([.int(5461), .int(10922), master("10.1.1.2", 7001)]),
            .array([.int(10923), .int(16382), master("?", 7002)]),  // endpoint unknown: unowned
            .array([.int(16383), .int(16383), master("10.1.1.2", 7001)]),
        ])
        let map = try ClusterSlotMap(parsing: reply, from: Self.source)
        #expect(map.owner(of: 0) == Self.source && map.owner(of: 5460) == Self.source)
        #expect(map.owner(of: 5461) == RedisEndpoint(host: "10.1.1.2", port: 7001))
        #expect(map.owner(of: 16383) == RedisEndpoint(host: "10.1.1.2", port: 7001))
        #expect(map.owner(of: 12000) == nil)
        #expect(map.nodes.count == 2 && map.coveredSlots == 16384 - (16382 - 10923 + 1))
    }

    @Test(arguments: [
        RedisReply.array([.array([.int(5), .int(4), .array([.string(b("h")), .int(1)])])]),  // start > end
        .array([.array([.int(0), .int(16384), .array([.string(b("h")), .int(1)])])]),  // past the last slot
        .array([.array([.int(-1), .int(3), .array([.string(b("h")), .int(1)])])]),
        .array([.array([.int(0), .int(3), .array([.string(b("h")), .int(0)])])]),  // port 0
        .array([.array([.int(0), .int(3), .array([.string(b("h")), .int(70000)])])]),
        .array([.array([.int(0), .int(3), .array([.int(1), .int(1)])])]),  // host not a string
        .array([.array([.int(0), .int(3)])]),  // no master
        .array([.int(1)]),
    ])
    func malformedSlotMapsAreProtocol(reply: RedisReply) {
        let error = #expect(throws: RemoteError.self) { try ClusterSlotMap(parsing: reply, from: Self.source) }
        #expect(error?.kind == .protocol)
        #expect(error?.message.hasPrefix("10.1.1.1:7000: CLUSTER:") == true)
    }

    @Test func slotMapErrorReplies() {
        let down = #expect(throws: RemoteError.self) { try ClusterSlotMap(parsing: .error("CLUSTERDOWN Hash slot not served"), from: Self.source) }
        #expect(down?.kind == .unavailable)
        let off = #expect(throws: RemoteError.self) { try ClusterSlotMap(parsing: .error("ERR This instance has cluster support disabled"), from: Self.source) }
        #expect(off?.kind == .rejected)
    }
}
