import CZMQ
import Foundation
import KVDProtocol

/// One DEALER connection to kvd, speaking the protocol every client speaks: a serialized
/// kvd.v1.Request per frame, a kvd.v1.Response back. Synchronous, one request at a time, every
/// wait bounded by `timeoutMs` so a daemon that is not there never hangs kvctl.
final class Connection {
    struct Curve {
        let serverKey: String
        let publicKey: String
        let secretKey: String
    }

    let endpoint: String
    private let timeoutMs: Int32
    private let context: UnsafeMutableRawPointer
    private let socket: UnsafeMutableRawPointer
    private var nextRequestID: UInt64 = 1

    init(endpoint: String, timeoutMs: Int, curve: Curve?) throws(Failure) {
        self.endpoint = endpoint
        self.timeoutMs = Int32(clamping: timeoutMs)
        if endpoint.hasPrefix("ipc://") {
            // libzmq connects to a missing ipc path silently and waits; say so at once instead.
            let path = String(endpoint.dropFirst("ipc://".count))
            guard FileManager.default.fileExists(atPath: path) else {
                throw .unreachable("cannot reach kvd at \(endpoint): no socket file at \(path) (is kvd running? check --endpoint or --config)")
            }
        }
        guard let ctx = zmq_ctx_new() else { throw .unreachable("cannot create a ZeroMQ context") }
        guard let sock = zmq_socket(ctx, ZMQ_DEALER) else {
            zmq_ctx_term(ctx)
            throw .unreachable("cannot create a ZeroMQ socket")
        }
        context = ctx
        socket = sock
        var zero: Int32 = 0
        zmq_setsockopt(sock, ZMQ_LINGER, &zero, MemoryLayout<Int32>.size)  // never block exit on unsent requests
        var one: Int32 = 1
        if endpoint.hasPrefix("tcp://[") { zmq_setsockopt(sock, ZMQ_IPV6, &one, MemoryLayout<Int32>.size) }
        if let curve {
            for (option, key) in [(ZMQ_CURVE_SERVERKEY, curve.serverKey), (ZMQ_CURVE_PUBLICKEY, curve.publicKey), (ZMQ_CURVE_SECRETKEY, curve.secretKey)] {
                guard zmq_setsockopt(sock, option, key, 40) == 0 else {
                    throw .usage("cannot use CURVE keys: \(String(cString: zmq_strerror(zmq_errno()))) (is libzmq built with CURVE?)")
                }
            }
        }
        guard zmq_connect(sock, endpoint) == 0 else {
            throw .usage("cannot connect to \(endpoint): \(String(cString: zmq_strerror(zmq_errno()))) (endpoints look like ipc:///path or tcp://host:port)")
        }
    }

    deinit {
        zmq_close(socket)
        zmq_ctx_term(context)
    }

    /// Sends `body`, waits for its reply and returns the reply's body; an error reply throws.
    func call(_ body: Kvd_V1_Request.OneOf_Body) throws(Failure) -> Kvd_V1_Response.OneOf_Body {
        var request = Kvd_V1_Request()
        request.requestID = nextRequestID
        request.protocolVersion = 1
        request.body = body
        let rid = nextRequestID
        nextRequestID += 1
        let bytes: [UInt8]
        do { bytes = try request.serializedBytes() } catch { throw .usage("cannot encode the request: \(error)") }
        var sent: Int32 = -1
        repeat {
            sent = bytes.withUnsafeBytes { zmq_send(socket, $0.baseAddress, $0.count, ZMQ_DONTWAIT) }
        } while sent < 0 && zmq_errno() == EINTR
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(timeoutMs) * 1_000_000
        if sent < 0 {
            // DEALER refuses to queue before any peer is connected: wait (bounded) for one.
            while sent < 0 {
                guard zmq_errno() == EAGAIN || zmq_errno() == EINTR, DispatchTime.now().uptimeNanoseconds < deadline else {
                    throw unreachable()
                }
                usleep(2_000)
                sent = bytes.withUnsafeBytes { zmq_send(socket, $0.baseAddress, $0.count, ZMQ_DONTWAIT) }
            }
        }
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else { throw unreachable() }
            var item = zmq_pollitem_t(socket: socket, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
            let ready = zmq_poll(&item, 1, Int((deadline - now) / 1_000_000) + 1)
            if ready < 0 {
                if zmq_errno() == EINTR { continue }
                throw .unreachable("waiting for kvd at \(endpoint): \(String(cString: zmq_strerror(zmq_errno())))")
            }
            if ready == 0 { continue }
            let reply = try receive()
            guard reply.header.requestID == rid else { continue }  // a late reply to an earlier request
            switch reply.body {
            case .error(let e): throw .reply(code: e.code, message: e.message)
            case .some(let body): return body
            case nil: throw .reply(code: .internal, message: "kvd: reply without a body")
            }
        }
    }

    private func receive() throws(Failure) -> Kvd_V1_Response {
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        guard zmq_msg_recv(&msg, socket, 0) >= 0 else {
            throw .unreachable("receiving from kvd at \(endpoint): \(String(cString: zmq_strerror(zmq_errno())))")
        }
        let buffer = UnsafeRawBufferPointer(start: zmq_msg_data(&msg), count: zmq_msg_size(&msg))
        do {
            return try Kvd_V1_Response(serializedBytes: Array(buffer))
        } catch {
            throw .unreachable("\(endpoint) answered with something that is not a kvd.v1.Response (\(buffer.count) bytes); is it kvd?")
        }
    }

    private func unreachable() -> Failure {
        let seconds = Double(timeoutMs) / 1000
        return .unreachable("cannot reach kvd at \(endpoint): no reply within \(seconds) s (is kvd running? for tcp with CURVE: are the keys right?; --timeout to wait longer)")
    }
}
