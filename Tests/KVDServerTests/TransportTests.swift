import Foundation
import KVDConfig
import KVDKeys
import Testing

@testable import KVDServer

@Suite struct EndpointTests {
    @Test func loopbackHosts() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "::ffff:127.0.0.1"] {
            #expect(Endpoint.isLoopback(host: host), "\(host)")
        }
        for host in ["0.0.0.0", "*", "::", "10.0.0.1", "128.0.0.1", "lo", "eth0", "127.1", "example.com", "::2", "::ffff:10.0.0.1", ""] {
            #expect(!Endpoint.isLoopback(host: host), "\(host)")
        }
    }

    @Test func parsesEndpoints() {
        #expect(Endpoint("ipc:///tmp/k.sock").transport == .ipc(path: "/tmp/k.sock"))
        #expect(Endpoint("tcp://127.0.0.1:5557").transport == .tcp(host: "127.0.0.1", bracketed: false))
        #expect(Endpoint("tcp://[::1]:5557").transport == .tcp(host: "::1", bracketed: true))
        #expect(Endpoint("tcp://*:5557").transport == .tcp(host: "*", bracketed: false))
        #expect(Endpoint("tcp://[::1]:5557").isLoopback && !Endpoint("tcp://[::]:5557").isLoopback)
        #expect(!Endpoint("tcp://0.0.0.0:5557").isLoopback && Endpoint("tcp://localhost:1").isLoopback)
    }
}

@Suite struct PeerCredentialsTests {
    @Test func parsesIPCPeerAddress() {
        #expect(PeerCredentials(peerAddress: "localhost:1000:100:4242") == PeerCredentials(uid: 1000, gid: 100, pid: 4242))
        #expect(PeerCredentials(peerAddress: "localhost:0:0:0") == PeerCredentials(uid: 0, gid: 0, pid: 0))
        #expect(PeerCredentials(peerAddress: "localhost:4294967295:4294967294:1")?.uid == UInt32.max)
    }

    @Test func refusesEverythingElse() {
        for text in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "localhost", "localhost:1:2", "localhost:1:2:3:4",
                     "localhost:-1:2:3", "localhost:1: 2:3", "localhost:1:2:", "host:1:2:3", "localhost:4294967296:0:1",
                     "localhost:1:2:99999999999"] {
            #expect(PeerCredentials(peerAddress: text) == nil, "\(text)")
        }
    }
}

@Suite struct CurveKeysTests {
    @Test func generatesMatchingPairs() throws {
        let a = try CurveKeys.generate(), b = try CurveKeys.generate()
        #expect(a != b && a.publicKey.utf8.count == 40 && a.secretKey.utf8.count == 40)
        #expect(try CurveKeys.publicKey(ofSecret: a.secretKey) == a.publicKey)
        #expect(CurveKeys.decode(a.publicKey).map(CurveKeys.encode) == a.publicKey)
    }

    @Test func decodesOnlyCanonicalZ85() throws {
        let key = try CurveKeys.generate().publicKey
        #expect(CurveKeys.decode(key)?.count == 32)
        #expect(CurveKeys.decode(String(key.dropLast())) == nil)
        #expect(CurveKeys.decode(String(repeating: "~", count: 40)) == nil)  // not in the alphabet
        #expect(CurveKeys.decode(String(repeating: "#", count: 40)) == nil)  // overflows 32 bits per group
    }

    @Test func readsKeyFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvd-keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pair = try CurveKeys.generate()
        let good = dir.appendingPathComponent("k.key").path
        try "\n  \(pair.secretKey)\n".write(toFile: good, atomically: true, encoding: .utf8)
        #expect(try CurveKeys.readKeyFile(good).key == pair.secretKey)
        let bad = dir.appendingPathComponent("bad.key").path
        try "secret-looking text\n".write(toFile: bad, atomically: true, encoding: .utf8)
        #expect(throws: CurveKeyError.self) { try CurveKeys.readKeyFile(bad) }
        do {
            _ = try CurveKeys.readKeyFile(bad)
        } catch {
            #expect(!error.message.contains("secret-looking"), "the file's contents never appear in an error")
        }
        #expect(throws: CurveKeyError.self) { try CurveKeys.readKeyFile(dir.path) }
        #expect(throws: CurveKeyError.self) { try CurveKeys.readKeyFile(dir.appendingPathComponent("none").path) }
    }
}

@Suite struct ZAPDecisionTests {
    let alphaKey = [UInt8](repeating: 7, count: 32)
    var tenants: [[UInt8]: String] { [alphaKey: "alpha"] }

    func request(domain: String = "kvd", address: String = "127.0.0.1", mechanism: String, credentials: [[UInt8]] = []) -> [[UInt8]] {
        [Array("1.0".utf8), Array("42".utf8), Array(domain.utf8), Array(address.utf8), [], Array(mechanism.utf8)] + credentials
    }

    func status(_ reply: (frames: [[UInt8]], verdict: ZAPDecision.Verdict)) -> (String, String) {
        #expect(reply.frames.count == 6 && reply.frames[0] == Array("1.0".utf8) && reply.frames[1] == Array("42".utf8))
        return (String(decoding: reply.frames[2], as: UTF8.self), String(decoding: reply.frames[4], as: UTF8.self))
    }

    @Test func curveKeyOfATenantGetsItsName() {
        #expect(status(ZAPDecision.answer(request(mechanism: "CURVE", credentials: [alphaKey]), tenantsByKey: tenants)) == ("200", "alpha"))
    }

    @Test func unknownCurveKeyIsRefused() {
        let other = [UInt8](repeating: 9, count: 32)
        let reply = ZAPDecision.answer(request(mechanism: "CURVE", credentials: [other]), tenantsByKey: tenants)
        #expect(status(reply) == ("400", ""))
        guard case .refused(_, let key) = reply.verdict else { Issue.record("not refused"); return }
        #expect(key == other)
    }

    @Test func nullGetsAnEmptyUserID() {
        #expect(status(ZAPDecision.answer(request(address: "localhost:1000:1000:77", mechanism: "NULL"), tenantsByKey: tenants)) == ("200", ""))
    }

    @Test func everythingElseIsRefused() {
        let cases = [
            request(mechanism: "PLAIN", credentials: [Array("u".utf8), Array("p".utf8)]),
            request(domain: "other", mechanism: "NULL"),
            request(address: "", mechanism: "NULL"),  // libzmq could not read the peer's address
            request(mechanism: "CURVE", credentials: [[1, 2, 3]]),
        ]
        for r in cases { #expect(status(ZAPDecision.answer(r, tenantsByKey: tenants)).0 == "400") }
        var old = request(mechanism: "NULL")
        old[0] = Array("0.9".utf8)
        #expect(status(ZAPDecision.answer(old, tenantsByKey: tenants)).0 == "400")
    }
}

@Suite struct TransportSecurityTests {
    static let models = """
        models:
          - {name: "m", layers: 1, kv_heads: 1, q_heads: 1, head_dim: 8, dtype: "f16", page_tokens: 4}
        """

    func config(_ server: String, tenants: String = "") throws -> Configuration {
        try ConfigLoader.parse("server:\n" + server + "\n" + Self.models + "\n" + tenants, file: "t.yaml")
    }

    func failure(_ c: Configuration) -> String? {
        do {
            _ = try TransportSecurity(config: c, file: "t.yaml")
            return nil
        } catch {
            return error.message
        }
    }

    @Test func nonLoopbackTCPNeedsCurveOrTheFlag() throws {
        for ep in ["tcp://0.0.0.0:5557", "tcp://*:5557", "tcp://[::]:5557", "tcp://10.1.2.3:5557", "tcp://eth0:5557"] {
            let message = failure(try config("  endpoints: [\"\(ep)\"]"))
            #expect(message?.contains(ep) == true && message?.contains("allow_insecure_tcp") == true, "\(ep)")
            let allowed = try config("  endpoints: [\"\(ep)\"]\n  allow_insecure_tcp: true")
            #expect(try TransportSecurity(config: allowed).warnings.contains { $0.contains(ep) })
        }
        #expect(failure(try config("  endpoints: [\"tcp://127.0.0.1:5557\", \"tcp://[::1]:5558\", \"ipc:///tmp/x.sock\"]")) == nil)
    }

    @Test func curveKeyFileAndTenantKeys() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kvd-sec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let server = try CurveKeys.generate(), client = try CurveKeys.generate()
        let keyFile = dir.appendingPathComponent("server.key").path
        try server.secretKey.write(toFile: keyFile, atomically: true, encoding: .utf8)
        chmod(keyFile, 0o600)
        let endpoints = "  endpoints: [\"tcp://0.0.0.0:5557\"]\n  curve: {secret_key_file: \"\(keyFile)\"}"
        let tenants = "tenants:\n  - {name: \"alpha\", curve_public_keys: [\"\(client.publicKey)\"]}"
        let security = try TransportSecurity(config: try config(endpoints, tenants: tenants))
        #expect(security.serverPublicKey == server.publicKey && security.warnings.isEmpty)
        #expect(security.tenantsByKey[CurveKeys.decode(client.publicKey)!] == "alpha")

        chmod(keyFile, 0o644)
        #expect(try TransportSecurity(config: try config(endpoints, tenants: tenants)).warnings.contains { $0.contains("chmod 600") })
        let missing = "  endpoints: [\"tcp://127.0.0.1:5557\"]\n  curve: {secret_key_file: \"\(dir.path)/none.key\"}"
        #expect(failure(try config(missing))?.contains("server.curve.secret_key_file") == true)
        let own = "tenants:\n  - {name: \"alpha\", curve_public_keys: [\"\(server.publicKey)\"]}"
        #expect(failure(try config(endpoints, tenants: own))?.contains("server's own public key") == true)
        let malformed = "tenants:\n  - {name: \"alpha\", curve_public_keys: [\"\(String(repeating: "~", count: 40))\"]}"
        #expect(failure(try config(endpoints, tenants: malformed))?.contains("tenants.alpha.curve_public_keys") == true)
        #expect(try TransportSecurity(config: try config(endpoints)).warnings.contains { $0.contains("every tcp client will be refused") })
    }
}
