import CZMQ
import Dispatch
import Foundation
import Synchronization

/// ZeroMQ's authentication hook (ZAP, RFC 27) for the daemon's ROUTER socket. libzmq asks it about
/// every new connection during the handshake, before any message of that connection is delivered,
/// over an inproc REP socket at "inproc://zeromq.zap.01" in the ROUTER's context. The ROUTER sets
/// ZMQ_ZAP_DOMAIN (so NULL-mechanism connections are asked about too) and ZMQ_ZAP_ENFORCE_DOMAIN
/// (so a connection fails, instead of being let in unauthenticated, if no handler answers).
/// What it answers is `ZAPDecision`.
enum ZAPHandler {
    static let endpoint = "inproc://zeromq.zap.01"
    static let domain = "kvd"

    /// Starts the handler's thread and returns once its socket is bound, so the ROUTER never
    /// completes a handshake nobody vetted. The thread ends when the context terminates
    /// (`RouterSocket.close`).
    static func start(context: ZMQContext, tenantsByKey: [[UInt8]: String], logger: Logger) throws(ZMQError) {
        let started = StartSignal()
        let thread = Thread {
            let worker: ZAPWorker
            do throws(ZMQError) {
                worker = try ZAPWorker(context: context)
            } catch {
                started.finish(error)
                return
            }
            started.finish(nil)
            worker.serve(tenantsByKey: tenantsByKey, logger: logger)
        }
        thread.name = "kvd-zap"
        thread.start()
        if let error = started.wait() { throw error }
    }
}

/// Tells the starting thread whether the handler's socket could be bound.
private final class StartSignal: Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let outcome = Mutex<ZMQError?>(nil)

    func finish(_ error: ZMQError?) {
        outcome.withLock { $0 = error }
        done.signal()
    }

    func wait() -> ZMQError? {
        done.wait()
        return outcome.withLock { $0 }
    }
}

/// The ZAP REP socket and the loop answering on it. Created on the handler's thread and
/// non-copyable, so the socket has one owner, on one thread, for its whole life; `serve` consumes
/// the worker and its deinit closes the socket (which `zmq_ctx_term` waits for).
private struct ZAPWorker: ~Copyable {
    private let socket: UnsafeMutableRawPointer

    init(context: ZMQContext) throws(ZMQError) {
        guard let s = zmq_socket(context.raw, ZMQ_REP) else { throw ZMQError.last("zmq_socket(REP) for ZAP") }
        var zero: Int32 = 0
        _ = zmq_setsockopt(s, ZMQ_LINGER, &zero, MemoryLayout<Int32>.size)
        guard zmq_bind(s, ZAPHandler.endpoint) == 0 else {
            let error = ZMQError.last("zmq_bind(\(ZAPHandler.endpoint))")
            zmq_close(s)
            throw error
        }
        socket = s
    }

    deinit { zmq_close(socket) }

    /// Answers requests until the context terminates.
    consuming func serve(tenantsByKey: [[UInt8]: String], logger: Logger) {
        // A refused client reconnects every 100 ms or so: warn once per key, then only at debug.
        var warned = Set<[UInt8]>()
        while let request = receive(logger) {
            let reply = ZAPDecision.answer(request, tenantsByKey: tenantsByKey)
            switch reply.verdict {
            case .accepted(let note): logger.debug("ZAP: accepted \(note)")
            case .refused(let note, let key):
                let first = key.map { warned.count < 4096 && warned.insert($0).inserted } ?? true
                logger.log(first ? .warning : .debug, "refused a connection: \(note)")
            }
            send(reply.frames, logger)
        }
    }

    /// One request's frames; nil once the context is terminating (or the socket broke, which with
    /// an enforced ZAP domain fails every new handshake: closed, not open).
    private func receive(_ logger: Logger) -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            if zmq_msg_recv(&msg, socket, 0) < 0 {
                let e = zmq_errno()
                if e == EINTR { continue }
                if e != ETERM { logger.error("ZAP handler stopped: \(ZMQError(call: "zmq_msg_recv", errno: e)); new connections will fail") }
                return nil
            }
            frames.append(Array(UnsafeRawBufferPointer(start: zmq_msg_data(&msg), count: zmq_msg_size(&msg))))
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }

    private func send(_ frames: [[UInt8]], _ logger: Logger) {
        for (i, frame) in frames.enumerated() {
            let flags = i == frames.count - 1 ? 0 : ZMQ_SNDMORE
            let rc = frame.withUnsafeBytes { zmq_send(socket, $0.baseAddress, $0.count, flags) }
            if rc < 0 {
                // ETERM: shutting down; the connection being vetted goes away with the socket.
                if zmq_errno() != ETERM { logger.error("ZAP reply not sent: \(ZMQError.last("zmq_send"))") }
                return
            }
        }
    }
}
