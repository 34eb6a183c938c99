import KVDConfig
import KVDKeys

/// The endpoints' security settings, checked: which tcp endpoints may be bound, the server's CURVE
/// key pair, and which tenant each client key belongs to. Built once by `kvd` right after loading
/// the config (a problem is a configuration error: exit status 2) and again when binding.
public struct TransportSecurity: Sendable {
    /// nil = no CURVE: every endpoint uses ZeroMQ's NULL mechanism.
    let serverKeys: CurveKeys.KeyPair?
    /// Tenant name per client public key (its 32 bytes).
    let tenantsByKey: [[UInt8]: String]
    /// Allowed but worth saying at start-up.
    public let warnings: [String]

    /// `file` names the config file in messages.
    public init(config: Configuration, file: String = "config") throws(ConfigError) {
        let server = config.server
        var warnings: [String] = []
        // The events endpoint (memory.events_endpoint) is held to the same rule as the request endpoints.
        let tcp = (server.endpoints + [config.memory.eventsEndpoint].filter { !$0.isEmpty }).map(Endpoint.init).filter(\.isTCP)

        var keys: CurveKeys.KeyPair?
        if let path = server.curveSecretKeyFile {
            let secret: String
            let mode: UInt32
            do throws(CurveKeyError) {
                (secret, mode) = try CurveKeys.readKeyFile(path)
                keys = CurveKeys.KeyPair(publicKey: try CurveKeys.publicKey(ofSecret: secret), secretKey: secret)
            } catch {
                throw ConfigError("\(file): server.curve.secret_key_file: \(error.message)")
            }
            if mode & 0o077 != 0 {
                warnings.append("server.curve.secret_key_file \(path) has mode \(String(mode, radix: 8)); others may read the server's secret key (chmod 600 it)")
            }
            if tcp.isEmpty { warnings.append("server.curve is set but no tcp:// endpoint is configured; ipc:// endpoints do not use CURVE") }
        }

        for endpoint in tcp where !endpoint.isLoopback && keys == nil {
            guard server.allowInsecureTCP else {
                throw ConfigError(
                    "\(file): server.endpoints: \(endpoint.text) is reachable from other machines (not a loopback address) and "
                        + "server.curve is not configured, so anyone who can reach it could read and change every tenant's KV cache. "
                        + "Configure server.curve.secret_key_file (keys from `kvd keygen`), bind 127.0.0.1, or, on a network you trust, "
                        + "set server.allow_insecure_tcp: true")
            }
            warnings.append("\(endpoint.text) accepts unauthenticated, unencrypted connections from the network (server.allow_insecure_tcp)")
        }

        var byKey: [[UInt8]: String] = [:]
        for tenant in config.tenants {
            for key in tenant.curvePublicKeys {
                guard let bytes = CurveKeys.decode(key) else {
                    throw ConfigError("\(file): tenants.\(tenant.name).curve_public_keys: '\(key)' is not a Z85 CURVE public key (40 characters of the Z85 alphabet, as in a `kvd keygen` .pub file)")
                }
                if keys?.publicKey == key {
                    throw ConfigError("\(file): tenants.\(tenant.name).curve_public_keys: \(key) is the server's own public key; list the clients' keys")
                }
                byKey[bytes] = tenant.name
            }
        }
        if keys == nil, !byKey.isEmpty {
            warnings.append("tenants list curve_public_keys but server.curve is not configured; those keys are not used")
        } else if keys != nil, !tcp.isEmpty, byKey.isEmpty {
            warnings.append("server.curve is set but no tenant lists curve_public_keys; every tcp client will be refused")
        }
        if server.endpoints.contains(where: { $0.hasPrefix("ipc://") }) {
            // connect() needs write permission on the socket file.
            if server.ipcMode & 0o002 != 0 {
                warnings.append("server.ipc_mode \(String(server.ipcMode, radix: 8)) lets every local user connect to the ipc socket")
            }
            if server.ipcMode & 0o200 == 0 {
                warnings.append("server.ipc_mode \(String(server.ipcMode, radix: 8)) denies the socket's owner write access; its user's clients cannot connect")
            }
        }
        serverKeys = keys
        tenantsByKey = byKey
        self.warnings = warnings
    }

    /// For the start-up log; never the secret.
    public var serverPublicKey: String? { serverKeys?.publicKey }
}
