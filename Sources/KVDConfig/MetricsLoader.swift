#if canImport(Glibc)
import Glibc
#endif

/// Reads the `metrics:` section (the Prometheus endpoint, docs/METRICS.md).
enum MetricsLoader {
    static func metrics(_ node: KeyedNode) throws(ConfigError) -> Configuration.Metrics {
        let m = try node.mapping(known: ["enabled", "listen"])
        var out = Configuration.Metrics()
        if let v = m["enabled"] { out.enabled = try v.bool() }
        if let v = m["listen"] {
            let text = try v.string()
            guard let (host, port) = parseListen(text) else {
                throw v.fail("must be an IP address and a port, e.g. \"127.0.0.1:9464\", \"[::1]:9464\" or \"127.0.0.1:0\" (any free port), got '\(text)'")
            }
            out.host = host
            out.port = port
        }
        return out
    }

    /// "127.0.0.1:9464" or "[::1]:9464" (IPv6 in brackets); the host must be an address literal, not
    /// a name, so that what kvd binds never depends on a resolver. Nil when it is not that.
    static func parseListen(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        let bracketed = host.hasPrefix("[") && host.hasSuffix("]") && host.count > 2
        if bracketed { host = String(host.dropFirst().dropLast()) }
        var v4 = in_addr()
        var v6 = in6_addr()
        if !bracketed, inet_pton(AF_INET, host, &v4) == 1 { return (host, port) }
        if bracketed, inet_pton(AF_INET6, host, &v6) == 1 { return (host, port) }
        return nil
    }
}
