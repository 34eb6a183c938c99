import CZMQ
import KVDConfig

#if canImport(Glibc)
import Glibc
#endif

/// Binds the configured endpoints on the ROUTER socket with their security:
/// 1. the ZAP handler starts, and the ROUTER's ZAP domain is set (enforced), before anything is
///    bound, so every connection on every endpoint is vetted and carries a User-Id only the
///    handler can set;
/// 2. ipc:// endpoints are bound next, on socket files the daemon creates (`IPCSocketFile`), with
///    the NULL mechanism: local access is governed by the file's mode (server.ipc_mode);
/// 3. then, when server.curve is configured, the socket becomes a CURVE server and the tcp://
///    endpoints are bound. libzmq copies socket options into each listener when it binds, so the
///    ipc listeners bound before stay NULL (and refuse CURVE clients) while every tcp listener is
///    CURVE (and refuses NULL clients).
/// Owns the ipc socket files it created until `removeSocketFiles`.
final class EndpointBinder {
    private let config: Configuration
    private let logger: Logger
    private var socketFiles: [IPCSocketFile] = []

    /// ZMQ_ZAP_ENFORCE_DOMAIN: in libzmq 4.3's draft section of zmq.h (so not imported), but
    /// accepted by the library. Without it a CURVE connection is let in unauthenticated whenever no
    /// ZAP handler answers.
    private static let zapEnforceDomain: Int32 = 93

    init(config: Configuration, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    func bind(_ socket: RouterSocket) throws {
        let security = try TransportSecurity(config: config)
        for warning in security.warnings { logger.warning(warning) }
        let endpoints = config.server.endpoints.map(Endpoint.init)

        try ZAPHandler.start(context: socket.context, tenantsByKey: security.tenantsByKey, logger: logger)
        try socket.setString(ZMQ_ZAP_DOMAIN, ZAPHandler.domain)
        do {
            try socket.setInt(Self.zapEnforceDomain, 1)
        } catch {
            logger.warning("libzmq refused ZMQ_ZAP_ENFORCE_DOMAIN (\(error)); connections rely on the ZAP handler staying up")
        }

        let backlog = try socket.getInt(ZMQ_BACKLOG)
        for endpoint in endpoints {
            guard case .ipc(let path) = endpoint.transport else { continue }
            let (file, fd, replaced) = try IPCSocketFile.create(path: path, mode: config.server.ipcMode, backlog: backlog)
            socketFiles.append(file)
            do {
                try socket.bind(endpoint.text, listeningFD: fd)
            } catch {
                close(fd)
                throw error
            }
            if replaced { logger.warning("removed a stale socket file \(path) left by an earlier run") }
        }

        if let keys = security.serverKeys {
            try socket.setInt(ZMQ_CURVE_SERVER, 1)
            try socket.setString(ZMQ_CURVE_SECRETKEY, keys.secretKey)
        }
        for endpoint in endpoints {
            guard case .tcp(_, let ipv6) = endpoint.transport else { continue }
            // IPv6 literals need ZMQ_IPV6, which would also make "*" dual-stack: set it per bind.
            guard ipv6 else {
                try socket.bind(endpoint.text)
                continue
            }
            try socket.setInt(ZMQ_IPV6, 1)
            let bound = Result { try socket.bind(endpoint.text) }
            try socket.setInt(ZMQ_IPV6, 0)
            try bound.get()
        }
        let tcp = endpoints.filter(\.isTCP)
        if let key = security.serverPublicKey, !tcp.isEmpty {
            logger.info("tcp endpoints use CURVE; server public key \(key) (clients need it, e.g. `kvd keygen --public-of` the secret key file)")
        }
    }

    /// Removes the ipc socket files this daemon created and still owns (after the socket closed).
    func removeSocketFiles() {
        for file in socketFiles { file.removeIfUnchanged() }
        socketFiles.removeAll()
    }
}
