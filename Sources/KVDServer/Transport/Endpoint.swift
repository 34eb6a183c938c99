#if canImport(Glibc)
import Glibc
#endif

/// A configured endpoint taken apart: an ipc socket path, or a tcp host (and whether it is
/// loopback). The config loader already checked the ipc:// / tcp:// prefix.
struct Endpoint: Sendable, Equatable {
    enum Transport: Sendable, Equatable {
        case ipc(path: String)
        /// `host` without brackets; `bracketed` for IPv6 literals ("tcp://[::1]:5557").
        case tcp(host: String, bracketed: Bool)
    }

    let text: String
    let transport: Transport

    init(_ text: String) {
        self.text = text
        if text.hasPrefix("ipc://") {
            transport = .ipc(path: String(text.dropFirst(6)))
            return
        }
        let rest = Substring(text.dropFirst("tcp://".count))
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            transport = .tcp(host: String(rest[rest.index(after: rest.startIndex)..<close]), bracketed: true)
        } else {
            transport = .tcp(host: String(rest[..<(rest.lastIndex(of: ":") ?? rest.endIndex)]), bracketed: false)
        }
    }

    var isTCP: Bool { if case .tcp = transport { true } else { false } }

    /// Only traffic from this machine can reach it: 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) or
    /// "localhost". Everything else counts as reachable from the network: "*", 0.0.0.0, ::,
    /// other addresses, interface names (even "lo": an address is what is checked), host names.
    var isLoopback: Bool {
        switch transport {
        case .ipc: return true
        case .tcp(let host, _): return Self.isLoopback(host: host)
        }
    }

    static func isLoopback(host: String) -> Bool {
        if host == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return true }
        return b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff && b[12] == 127
    }
}
