import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Tells a service manager how kvd is doing, over the sd_notify protocol: one datagram of
/// `KEY=value` lines to the unix socket named by `$NOTIFY_SOCKET` (systemd's `Type=notify`).
/// Without that variable (not started by systemd) every call does nothing. Written out rather than
/// linked from libsystemd: the protocol is one `sendto`, and kvd then needs no systemd library on
/// machines that have none.
public struct ServiceNotifier: Sendable {
    /// The socket's address bytes (`@name` = Linux abstract namespace), nil when not under systemd.
    private let path: [UInt8]?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let value = environment["NOTIFY_SOCKET"] ?? ""
        path = value.isEmpty || !(value.hasPrefix("/") || value.hasPrefix("@")) ? nil : Array(value.utf8)
    }

    public var enabled: Bool { path != nil }

    /// Serving: the endpoints are bound and requests are answered.
    public func ready(status: String) { send("READY=1\nSTATUS=\(status)\nMAINPID=\(getpid())") }
    /// SIGHUP received; `ready` follows when the reload is done (systemd's notify-reload protocol).
    public func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        send("RELOADING=1\nMONOTONIC_USEC=\(Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000)")
    }
    /// Draining in-flight requests before exit.
    public func stopping(status: String) { send("STOPPING=1\nSTATUS=\(status)") }

    /// Best effort: a manager that is gone must not stop kvd serving.
    private func send(_ message: String) {
        guard let path, path.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.enumerated() { raw[i] = b }
            if path.first == UInt8(ascii: "@") { raw[0] = 0 }  // abstract socket: leading NUL, no terminator
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let bytes = Array(message.utf8)
        _ = withUnsafePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
    }
}
