import Foundation
import KVDConfig
import KVDCore
import KVDPluginAPI
import KVDPluginHost
import KVDShm
import KVDProtocol
import Testing

@testable import KVDServer

@Suite struct RequestIDWindowTests {
    static let second: UInt64 = 1_000_000_000

    @Test func refusesReuseWithinTheWindowOnly() {
        var ids = RecentRequestIDs(window: 4, idleSeconds: 60)
        let peer: [UInt8] = [1]
        do { let ok = ids.record(10, peer: peer, now: 1); #expect(ok) }
        do { let ok = ids.record(10, peer: peer, now: 2); #expect(!ok) }
        do { let ok = ids.record(10, peer: [2], now: 3); #expect(ok, "ids are per connection") }
        for id in 11...14 { do { let ok = ids.record(UInt64(id), peer: peer, now: 4); #expect(ok) } }
        do { let ok = ids.record(10, peer: peer, now: 5); #expect(ok, "four newer ids pushed 10 out of a window of 4") }
        do { let ok = ids.record(14, peer: peer, now: 6); #expect(!ok) }
    }

    @Test func forgetsQuietConnections() {
        var ids = RecentRequestIDs(window: 8, idleSeconds: 2)
        do { let ok = ids.record(1, peer: [1], now: 10 * Self.second); #expect(ok) }
        do { let ok = ids.record(1, peer: [2], now: 11 * Self.second); #expect(ok) }
        do { let n = ids.peerCount; #expect(n == 2) }
        // Peer 1 has been quiet 2.5 s, peer 2 1.5 s.
        do { let ok = ids.record(5, peer: [3], now: 12 * Self.second + Self.second / 2); #expect(ok) }
        do { let n = ids.peerCount; #expect(n == 2) }
        do { let ok = ids.record(1, peer: [1], now: 13 * Self.second); #expect(ok, "peer 1's ids were forgotten") }
        do { let ok = ids.record(1, peer: [2], now: 13 * Self.second); #expect(!ok, "peer 2 was not quiet long enough") }
    }

    @Test func boundedNumberOfConnections() {
        var ids = RecentRequestIDs(window: 8, idleSeconds: 3600, maxPeers: 3)
        for p in 0..<10 { let ok = ids.record(1, peer: [UInt8(p)], now: UInt64(p + 1)); #expect(ok) }
        do { let n = ids.peerCount; #expect(n == 3) }
        do { let ok = ids.record(1, peer: [9], now: 20); #expect(!ok, "the most recent peers are kept") }
    }
}

@Suite struct TenantBindingTests {
    final class Spaces {
        let store: Store
        init(_ tenants: [Configuration.Tenant], adminToken: String? = nil) throws {
            var config = Configuration()
            config.admin.token = adminToken
            config.models = [ModelLayout(name: "m", layers: 1, kvHeads: 1, qHeads: 1, headDim: 8, dtype: .f16, pageTokens: 4, defaultMethod: "streamingllm")]
            config.tenants = tenants
            let spaces = try tenants.map { t in
                let sizing = try ArenaSizing.compute(segmentBytes: 1 << 16, stagingBytes: 0, models: config.models)
                return TenantSpace(tenant: t, arena: try Arena(name: t.arena.shmName, sizing: sizing))
            }
            store = Store(config: config, spaces: spaces, policies: try PolicyBook(config: config, registry: MethodRegistry(Catalog.builtinMethods), file: "test"))
        }
        deinit { for s in store.spaces { s.arena.close() } }
    }

    static func tenant(_ name: String, token: String?, uids: [UInt32] = []) -> Configuration.Tenant {
        var arena = Configuration.Arena()
        arena.shmName = "/kvd-unit-\(name)-\(UUID().uuidString.prefix(8))"
        var t = Configuration.Tenant(name: name, arena: arena)
        t.token = token
        t.unixUIDs = uids
        return t
    }

    static let tokenA = "token-of-alpha-0123456789"

    func hello(_ tenant: String, _ token: String) -> Kvd_V1_HelloRequest {
        var r = Kvd_V1_HelloRequest()
        r.tenant = tenant
        r.token = token
        return r
    }

    @Test func helloBindsAndOnlyTheSamePeerStaysBound() throws {
        let s = try Spaces([Self.tenant("alpha", token: Self.tokenA)])
        var bindings = TenantBindings()
        let me = PeerIdentity(routingID: [7], userID: nil, peerAddress: "localhost:1000:1000:42")
        let unbound = TenantAuth.resolve(me, &bindings, s.store, now: 1)
        #expect((try? unbound.get()) == nil, "no open tenant: unbound is refused")
        let wrong = TenantAuth.hello(hello("alpha", "wrong-token-000000"), me, &bindings, s.store, now: 2)
        #expect((try? wrong.get()) == nil)
        let bound = try TenantAuth.hello(hello("alpha", Self.tokenA), me, &bindings, s.store, now: 3).get()
        #expect(bound.name == "alpha")
        let again = TenantAuth.resolve(me, &bindings, s.store, now: 4)
        #expect(try again.get() === bound)
        let impostor = PeerIdentity(routingID: [7], userID: nil, peerAddress: "localhost:1000:1000:43")
        let stolen = TenantAuth.resolve(impostor, &bindings, s.store, now: 5)
        #expect((try? stolen.get()) == nil)
    }

    @Test func unknownTenantAndWrongTokenLookTheSame() throws {
        let s = try Spaces([Self.tenant("alpha", token: Self.tokenA)])
        var bindings = TenantBindings()
        let me = PeerIdentity(routingID: [1], userID: nil, peerAddress: nil)
        func message(_ r: Kvd_V1_HelloRequest) -> String? {
            if case .failure(let e) = TenantAuth.hello(r, me, &bindings, s.store, now: 1) { return e.message }
            return nil
        }
        let a = message(hello("alpha", "not-the-token-000000"))
        let b = message(hello("nobody", Self.tokenA))
        #expect(a != nil && a == b)
    }

    @Test func curveUserIDWinsAndCannotBeOverridden() throws {
        let s = try Spaces([Self.tenant("alpha", token: Self.tokenA), Self.tenant("bravo", token: "token-of-bravo-0123456789")])
        var bindings = TenantBindings()
        let curve = PeerIdentity(routingID: [3], userID: "bravo", peerAddress: "127.0.0.1")
        let viaKey = TenantAuth.resolve(curve, &bindings, s.store, now: 1)
        #expect(try viaKey.get().name == "bravo")
        let other = TenantAuth.hello(hello("alpha", Self.tokenA), curve, &bindings, s.store, now: 2)
        #expect((try? other.get()) == nil)
        let plain = TenantAuth.hello(hello("", ""), curve, &bindings, s.store, now: 3)
        #expect(try plain.get().name == "bravo")
    }

    @Test func openTenantAndUnixUIDs() throws {
        let s = try Spaces([Self.tenant("open", token: nil, uids: [1000]), Self.tenant("alpha", token: Self.tokenA)])
        var bindings = TenantBindings()
        let allowed = PeerIdentity(routingID: [1], userID: nil, peerAddress: "localhost:1000:1000:9")
        let other = PeerIdentity(routingID: [2], userID: nil, peerAddress: "localhost:1001:1001:9")
        let ok = TenantAuth.resolve(allowed, &bindings, s.store, now: 1)
        #expect(try ok.get().name == "open")
        let refused = TenantAuth.resolve(other, &bindings, s.store, now: 1)
        #expect((try? refused.get()) == nil)
        let helloRefused = TenantAuth.hello(hello("", ""), other, &bindings, s.store, now: 2)
        #expect((try? helloRefused.get()) == nil)
    }

    @Test func bindingsAreBounded() throws {
        let s = try Spaces([Self.tenant("alpha", token: Self.tokenA)])
        var bindings = TenantBindings(capacity: 2)
        for i in 0..<5 { bindings.bind([UInt8(i)], to: s.store.spaces[0], peerAddress: nil, now: UInt64(i)) }
        do { let n = bindings.count; #expect(n == 2) }
        do { let b = bindings.space(of: [4], peerAddress: nil, now: 9); #expect(b != nil) }
        do { let b = bindings.space(of: [0], peerAddress: nil, now: 9); #expect(b == nil) }
    }

    @Test func constantTimeEqualIsEquality() {
        #expect(TenantAuth.constantTimeEqual("abc", "abc"))
        #expect(!TenantAuth.constantTimeEqual("abc", "abd"))
        #expect(!TenantAuth.constantTimeEqual("abc", "abcd"))
        #expect(!TenantAuth.constantTimeEqual("", "a"))
        #expect(TenantAuth.constantTimeEqual("", ""))
    }

    static let adminToken = "admin-token-0123456789abc"

    @Test func adminTokenBindsAsAdminToTheNamedTenantOnly() throws {
        let s = try Spaces([Self.tenant("alpha", token: Self.tokenA), Self.tenant("bravo", token: "token-of-bravo-0123456789")], adminToken: Self.adminToken)
        var bindings = TenantBindings()
        let me = PeerIdentity(routingID: [9], userID: nil, peerAddress: "localhost:1000:1000:42")
        var r = hello("bravo", "")
        r.adminToken = Self.adminToken
        #expect(try TenantAuth.hello(r, me, &bindings, s.store, now: 1).get().name == "bravo")
        do { let admin = TenantAuth.isAdmin(me, bindings, s.store); #expect(admin) }
        // The same routing id from another process is neither bound nor admin.
        let impostor = PeerIdentity(routingID: [9], userID: nil, peerAddress: "localhost:1000:1000:43")
        do { let admin = TenantAuth.isAdmin(impostor, bindings, s.store); #expect(!admin) }
        // A tenant token binds, but not as admin; a wrong admin token binds nothing.
        let plain = PeerIdentity(routingID: [10], userID: nil, peerAddress: nil)
        _ = try TenantAuth.hello(hello("alpha", Self.tokenA), plain, &bindings, s.store, now: 2).get()
        do { let admin = TenantAuth.isAdmin(plain, bindings, s.store); #expect(!admin) }
        var wrong = hello("alpha", "")
        wrong.adminToken = "admin-token-0123456789abd"
        let other = PeerIdentity(routingID: [11], userID: nil, peerAddress: nil)
        guard case .failure(let e) = TenantAuth.hello(wrong, other, &bindings, s.store, now: 3) else {
            Issue.record("a wrong admin token was accepted")
            return
        }
        #expect(e.code == .permissionDenied && !e.message.contains("abd"))
        #expect((try? TenantAuth.resolve(other, &bindings, s.store, now: 4).get()) == nil)
        // Re-binding with the tenant's own token drops the admin flag.
        _ = try TenantAuth.hello(hello("alpha", Self.tokenA), me, &bindings, s.store, now: 5).get()
        do { let admin = TenantAuth.isAdmin(me, bindings, s.store); #expect(!admin) }
    }

    @Test func withoutAnyCredentialEveryoneIsAdmin() throws {
        let open = try Spaces([Self.tenant("default", token: nil)])
        let anyone = PeerIdentity(routingID: [1], userID: nil, peerAddress: nil)
        do { let admin = TenantAuth.isAdmin(anyone, TenantBindings(), open.store); #expect(admin) }
        // An admin token, or a second tenant with a credential, ends that.
        let guarded = try Spaces([Self.tenant("default", token: nil)], adminToken: Self.adminToken)
        do { let admin = TenantAuth.isAdmin(anyone, TenantBindings(), guarded.store); #expect(!admin) }
        let two = try Spaces([Self.tenant("default", token: nil), Self.tenant("alpha", token: Self.tokenA)])
        do { let admin = TenantAuth.isAdmin(anyone, TenantBindings(), two.store); #expect(!admin) }
    }
}
