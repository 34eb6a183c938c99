import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A TCP server on a free loopback port that answers every request it reads with `respond(request)`
/// (raw bytes, so a test can send what no Redis would: wrong types, garbage, huge declared sizes).
/// `nil` from `respond` closes the connection. One connection at a time, on its own thread, until
/// `stop()`.
final class FakeServer {
    let port: Int
    private let listener: Int32

    convenience init(_ respond: @escaping @Sendable (_ request: [UInt8]) -> [UInt8]?) throws {
        try self.init(inPieces: { request in respond(request).map { [$0] } })
    }

    /// Answers in pieces sent a few milliseconds apart, so the client's reads split where the test
    /// says (inside a header, inside a value). An empty piece closes the connection there.
    init(inPieces respond: @escaping @Sendable (_ request: [UInt8]) -> [[UInt8]]?) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RedisServers.Failure(description: "socket: errno \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0  // the kernel picks a free port
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else {
            close(fd)
            throw RedisServers.Failure(description: "bind/listen on 127.0.0.1: errno \(errno)")
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        Thread.detachNewThread { Self.serve(fd, respond) }
    }

    private var stopped = false

    deinit { stop() }

    /// Wakes the accept (shutdown of a listening socket makes it fail), and the thread then closes
    /// the socket and ends. Once only: after that the descriptor may be closed and reused by another
    /// test's socket, which a second shutdown would break.
    func stop() {
        if stopped { return }
        stopped = true
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private static func serve(_ listener: Int32, _ respond: @Sendable ([UInt8]) -> [[UInt8]]?) {
        defer { close(listener) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let conn = accept(listener, nil, nil)
            if conn < 0 { return }
            while true {
                let n = buffer.withUnsafeMutableBytes { read(conn, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                guard let pieces = respond(Array(buffer[0..<n])) else { break }
                if !send(pieces, to: conn) { break }
            }
            close(conn)
        }
    }

    /// Sends each piece, pausing between them; false at an empty piece (close here).
    private static func send(_ pieces: [[UInt8]], to conn: Int32) -> Bool {
        for (i, piece) in pieces.enumerated() {
            if piece.isEmpty { return false }
            if i > 0 { usleep(5_000) }
            // MSG_NOSIGNAL: a client that hung up must not kill the test process with SIGPIPE.
            _ = piece.withUnsafeBytes { Glibc.send(conn, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        return true
    }
}

extension [UInt8] {
    /// Whether the request bytes contain `text` (the fake servers look for command names).
    func has(_ text: String) -> Bool {
        let needle = Array(text.utf8)
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { self[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}
