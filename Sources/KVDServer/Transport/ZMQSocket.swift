import CZMQ
import Foundation

/// A failed libzmq call, with zmq's own text for errno.
public struct ZMQError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32
    public var description: String { "\(call): \(String(cString: zmq_strerror(errno))) (errno \(errno))" }
    static func last(_ call: String) -> ZMQError { ZMQError(call: call, errno: zmq_errno()) }
}

/// One received multipart message: every frame but the last copied (identity, REQ delimiter — a
/// few bytes), the last one (the request) borrowed from libzmq without a copy, plus what libzmq
/// knows about the connection it came on (fixed when the connection's handshake completed).
struct Frames {
    /// Identity first, then any frames before the last.
    var envelope: [[UInt8]]
    /// The last frame. Valid only inside the `receive` callback: it points into libzmq's buffer.
    var payload: Data
    /// The connection's ZAP User-Id: the name of the tenant whose CURVE key the peer proved it holds
    /// (set by `ZAPHandler`); nil on NULL-mechanism connections (ipc, insecure tcp). The peer
    /// cannot choose it: every connection passes the ZAP handler, whose answer takes precedence
    /// over anything the peer sends in its handshake.
    var userID: String?
    /// libzmq's "Peer-Address": "127.0.0.1" / "::1" on tcp, "localhost:UID:GID:PID" on ipc (the
    /// peer's SO_PEERCRED at connect time). For logs; use `peerCredentials` for decisions.
    var peerAddress: String?

    /// The ipc peer's Unix credentials, parsed from `peerAddress`; nil on tcp.
    var peerCredentials: PeerCredentials? { peerAddress.flatMap(PeerCredentials.init(peerAddress:)) }
}

/// The daemon's ROUTER socket. Not thread-safe (libzmq sockets never are): only the server's socket
/// thread creates, uses and closes it. The context is thread-safe and owned alongside.
final class RouterSocket {
    private let rawContext: UnsafeMutableRawPointer
    private let socket: UnsafeMutableRawPointer
    private(set) var bound: [String] = []

    init(hardMessageLimit: Int) throws {
        guard let ctx = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        guard let s = zmq_socket(ctx, ZMQ_ROUTER) else {
            zmq_ctx_term(ctx)
            throw ZMQError.last("zmq_socket(ROUTER)")
        }
        rawContext = ctx
        socket = s
        // Drop a peer that sends something far beyond the soft limit, instead of buffering it all;
        // messages between the soft and the hard limit still get a clear error reply.
        try setInt64(ZMQ_MAXMSGSIZE, Int64(hardMessageLimit))
        // Replies to a peer that went away are dropped rather than blocking the socket thread.
        try setInt(ZMQ_SNDHWM, 10_000)
        try setInt(ZMQ_RCVHWM, 10_000)
        try setInt(ZMQ_LINGER, 1000)
    }

    /// The socket's context, for the ZAP handler's socket (ZAP is found through the context).
    var context: ZMQContext { ZMQContext(raw: rawContext) }

    /// Socket options apply to endpoints bound after they are set (each listener copies them).
    func setInt(_ option: Int32, _ value: Int32) throws {
        var v = value
        if zmq_setsockopt(socket, option, &v, MemoryLayout<Int32>.size) != 0 { throw ZMQError.last("zmq_setsockopt(\(option))") }
    }

    func getInt(_ option: Int32) throws -> Int32 {
        var v: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(socket, option, &v, &size) != 0 { throw ZMQError.last("zmq_getsockopt(\(option))") }
        return v
    }

    func setString(_ option: Int32, _ value: String) throws {
        let rc = value.utf8CString.withUnsafeBufferPointer { zmq_setsockopt(socket, option, $0.baseAddress, $0.count - 1) }
        if rc != 0 { throw ZMQError.last("zmq_setsockopt(\(option))") }
    }

    private func setInt64(_ option: Int32, _ value: Int64) throws {
        var v = value
        if zmq_setsockopt(socket, option, &v, MemoryLayout<Int64>.size) != 0 { throw ZMQError.last("zmq_setsockopt(\(option))") }
    }

    func bind(_ endpoint: String) throws {
        if zmq_bind(socket, endpoint) != 0 { throw ZMQError.last("zmq_bind(\(endpoint))") }
        bound.append(endpoint)
    }

    /// Binds `endpoint` on a listening socket the caller created (ZMQ_USE_FD): libzmq then neither
    /// unlinks an existing ipc path first nor binds itself. libzmq closes `fd` when unbinding.
    func bind(_ endpoint: String, listeningFD fd: Int32) throws {
        try setInt(ZMQ_USE_FD, fd)
        let bound = Result { try bind(endpoint) }
        try setInt(ZMQ_USE_FD, -1)  // a later bind must not reuse the descriptor
        try bound.get()
    }

    /// Stops accepting new connections on every endpoint; connected peers still get their replies.
    func unbindAll() {
        for e in bound { _ = zmq_unbind(socket, e) }
        bound.removeAll()
    }

    /// Waits until the socket is readable or `fd` is readable, for at most `timeoutMs` (-1 = forever).
    /// Returns (socketReadable, fdReadable).
    func poll(watchSocket: Bool, fd: Int32, timeoutMs: Int) -> (Bool, Bool) {
        var items = [
            zmq_pollitem_t(socket: socket, fd: 0, events: Int16(watchSocket ? ZMQ_POLLIN : 0), revents: 0),
            zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0),
        ]
        let rc = zmq_poll(&items, 2, timeoutMs)
        if rc <= 0 { return (false, false) }
        return (items[0].revents & Int16(ZMQ_POLLIN) != 0, items[1].revents & Int16(ZMQ_POLLIN) != 0)
    }

    /// Receives one whole multipart message without blocking and hands it to `body`; returns false
    /// when none was waiting. The payload is decoded in place, saving a copy of every K/V byte.
    func receive(_ body: (Frames) -> Void) throws -> Bool {
        var envelope: [[UInt8]] = []
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            let n = zmq_msg_recv(&msg, socket, envelope.isEmpty ? ZMQ_DONTWAIT : 0)
            if n < 0 {
                if zmq_errno() == EAGAIN && envelope.isEmpty { return false }
                if zmq_errno() == EINTR { continue }
                throw ZMQError.last("zmq_msg_recv")
            }
            let size = zmq_msg_size(&msg)
            let data = zmq_msg_data(&msg)
            if zmq_msg_more(&msg) == 0 {
                let payload = size == 0 || data == nil
                    ? Data() : Data(bytesNoCopy: data!, count: size, deallocator: .none)
                // The connection's metadata rides on every message; the last frame always has it.
                let userID = zmq_msg_gets(&msg, "User-Id").map { String(cString: $0) }
                let peerAddress = zmq_msg_gets(&msg, "Peer-Address").map { String(cString: $0) }
                body(Frames(envelope: envelope, payload: payload, userID: userID?.isEmpty == false ? userID : nil, peerAddress: peerAddress))
                return true
            }
            envelope.append(size == 0 ? [] : Array(UnsafeRawBufferPointer(start: data, count: size)))
        }
    }

    /// Sends a reply: the route frames, then the message. A ROUTER drops messages to unknown or gone
    /// peers, so this only fails on a real socket error. An owned payload goes to libzmq without a
    /// copy (it frees the block after sending); it is freed here if sending fails.
    func send(_ reply: OutgoingReply) throws {
        for frame in reply.route {
            let rc = frame.withUnsafeBytes { zmq_send(socket, $0.baseAddress, $0.count, ZMQ_SNDMORE) }
            if rc < 0 {
                if case .owned(let block, _, _) = reply.payload { free(block) }
                throw ZMQError.last("zmq_send")
            }
        }
        switch reply.payload {
        case .bytes(let bytes):
            let rc = bytes.withUnsafeBytes { zmq_send(socket, $0.baseAddress, $0.count, 0) }
            if rc < 0 { throw ZMQError.last("zmq_send") }
        case .owned(let block, let offset, let length):
            var msg = zmq_msg_t()
            // libzmq calls this from its I/O thread once the bytes are on the wire.
            let freeBlock: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, hint in free(hint) }
            guard zmq_msg_init_data(&msg, block + offset, length, freeBlock, block) == 0 else {
                free(block)
                throw ZMQError.last("zmq_msg_init_data")
            }
            if zmq_msg_send(&msg, socket, 0) < 0 {
                zmq_msg_close(&msg)  // frees the block through freeBlock
                throw ZMQError.last("zmq_msg_send")
            }
        }
    }

    /// Closes the socket and terminates the context, which also ends the ZAP handler (its blocked
    /// receive returns ETERM; `zmq_ctx_term` waits until it has closed its socket).
    func close() {
        zmq_close(socket)
        zmq_ctx_term(rawContext)
    }
}
