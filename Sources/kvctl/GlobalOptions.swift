import ArgumentParser
import Foundation
import KVDConfig
import KVDKeys
import KVDProtocol

/// Where kvd is, who kvctl is to it, and how to print: shared by every verb.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("kvd's endpoint (default: the ipc endpoint of --config, else ipc:///tmp/kvd-default.sock).", valueName: "URL"))
    var endpoint: String?

    @Option(name: .long, help: ArgumentHelp("kvd's config file: its first ipc endpoint (else first endpoint) is used.", valueName: "FILE"))
    var config: String?

    @Option(name: .long, help: "Tenant to act for (default: the open tenant, or the tenant of the CURVE key).")
    var tenant: String = ""

    // Values may start with '-' (tokens, Z85 keys): `.unconditional` takes the next word as the value.
    @Option(name: .long, parsing: .unconditional, help: "The tenant's token (prefer --token-file: arguments are visible to other users).")
    var token: String?

    @Option(name: .customLong("token-file"), help: ArgumentHelp("File whose first line is the tenant's token.", valueName: "FILE"))
    var tokenFile: String?

    @Option(name: .customLong("admin-token"), parsing: .unconditional, help: "The admin token (config admin.token); binds as admin for --tenant.")
    var adminToken: String?

    @Option(name: .customLong("admin-token-file"), help: ArgumentHelp("File whose first line is the admin token.", valueName: "FILE"))
    var adminTokenFile: String?

    @Option(name: .customLong("curve-server-key"), parsing: .unconditional, help: ArgumentHelp("kvd's CURVE public key (Z85) or a file holding it, for a CURVE tcp endpoint.", valueName: "KEY|FILE"))
    var curveServerKey: String?

    @Option(name: .customLong("curve-key"), help: ArgumentHelp("This client's CURVE secret key file (kvctl keygen); its public key must be listed under a tenant.", valueName: "FILE"))
    var curveKey: String?

    @Option(name: .long, help: "Seconds to wait for each reply.")
    var timeout: Double = 5

    @Flag(name: .long, help: "Print one JSON document (field names in docs/KVCTL.md) instead of tables.")
    var json = false

    func validate() throws {
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be between 0 and 3600 seconds") }
        if token != nil, tokenFile != nil { throw ValidationError("give --token or --token-file, not both") }
        if adminToken != nil, adminTokenFile != nil { throw ValidationError("give --admin-token or --admin-token-file, not both") }
        if (curveServerKey == nil) != (curveKey == nil) { throw ValidationError("CURVE needs both --curve-server-key and --curve-key") }
    }

    /// The endpoint to use: --endpoint, else --config's, else the bundled default's.
    func resolvedEndpoint() throws(Failure) -> String {
        if let endpoint { return endpoint }
        guard let config else { return "ipc:///tmp/kvd-default.sock" }
        let loaded: Configuration
        do { loaded = try ConfigLoader.load(path: config) } catch { throw .usage("--config: \(error.message)") }
        let endpoints = loaded.server.endpoints
        guard let chosen = endpoints.first(where: { $0.hasPrefix("ipc://") }) ?? endpoints.first else {
            throw .usage("--config \(config) lists no server.endpoints")
        }
        return chosen
    }

    /// Connects and says Hello with the credentials given; returns the session.
    func connect() throws(Failure) -> Session {
        let endpoint = try resolvedEndpoint()
        var curve: Connection.Curve?
        if let server = curveServerKey, let secretFile = curveKey {
            do throws(CurveKeyError) {
                let serverKey = server.utf8.count == 40 && !FileManager.default.fileExists(atPath: server)
                    ? server : try CurveKeys.readKeyFile(server).key
                let secret = try CurveKeys.readKeyFile(secretFile).key
                curve = Connection.Curve(serverKey: serverKey, publicKey: try CurveKeys.publicKey(ofSecret: secret), secretKey: secret)
            } catch {
                throw .usage("CURVE keys: \(error.message)")
            }
        }
        let connection = try Connection(endpoint: endpoint, timeoutMs: Int(timeout * 1000), curve: curve)
        var hello = Kvd_V1_HelloRequest()
        hello.protocolVersions = [1]
        hello.clientName = "kvctl"
        hello.tenant = tenant
        hello.token = try secret(token, tokenFile, "--token-file") ?? ""
        hello.adminToken = try secret(adminToken, adminTokenFile, "--admin-token-file") ?? ""
        guard case .hello(let welcome) = try connection.call(.hello(hello)) else {
            throw .reply(code: .internal, message: "kvd: Hello answered with another kind of reply")
        }
        return Session(connection: connection, hello: welcome, json: json)
    }

    /// A secret given inline or as the first line of a file (never echoed in errors).
    private func secret(_ inline: String?, _ file: String?, _ flag: String) throws(Failure) -> String? {
        if let inline { return inline }
        guard let file else { return nil }
        guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
            throw .usage("\(flag): cannot read \(file)")
        }
        return text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
    }
}

/// A connected, greeted kvctl session.
struct Session {
    let connection: Connection
    let hello: Kvd_V1_HelloResponse
    let json: Bool

    func call(_ body: Kvd_V1_Request.OneOf_Body) throws(Failure) -> Kvd_V1_Response.OneOf_Body {
        try connection.call(body)
    }
}
