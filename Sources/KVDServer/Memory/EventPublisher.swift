import CZMQ
import Dispatch
import Foundation
import KVDConfig
import KVDProtocol
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The events endpoint (memory.events_endpoint): a ZeroMQ PUB socket publishing what the memory
/// manager did, as two frames: the topic "kvd.<tenant>" and a serialized kvd.v1.Event. Subscribers
/// filter by topic prefix. PUB never blocks: a slow subscriber loses events, and the gap shows in
/// `sequence_number`.
///
/// The socket is created and used only on `queue` (a serial queue; libzmq sockets must not be used
/// from two threads at once, and a serial queue orders every use). It lives in the request socket's
/// context, so on tcp:// it passes the same ZAP handler and CURVE keys.
final class EventPublisher: Sendable {
    let endpoint: String
    private let queue = DispatchQueue(label: "kvd.events")
    /// Only touched on `queue` (see above), which is why it can be `nonisolated(unsafe)`.
    nonisolated(unsafe) private var socket: UnsafeMutableRawPointer?
    nonisolated(unsafe) private var socketFile: IPCSocketFile?
    private let numbering = Atomic<UInt64>(0)

    init(endpoint: String, context: ZMQContext, config: Configuration, logger: Logger) throws {
        self.endpoint = endpoint
        let security = try TransportSecurity(config: config)
        try queue.sync { () throws in
            dispatchPrecondition(condition: .onQueue(queue))
            guard let s = zmq_socket(context.raw, ZMQ_PUB) else { throw ZMQError.last("zmq_socket(PUB)") }
            socket = s
            var hwm: Int32 = 10_000
            zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, MemoryLayout<Int32>.size)
            var linger: Int32 = 0
            zmq_setsockopt(s, ZMQ_LINGER, &linger, MemoryLayout<Int32>.size)
            let e = Endpoint(endpoint)
            switch e.transport {
            case .ipc(let path):
                let (file, fd, _) = try IPCSocketFile.create(path: path, mode: config.server.ipcMode, backlog: 100)
                socketFile = file
                var v = fd
                zmq_setsockopt(s, ZMQ_USE_FD, &v, MemoryLayout<Int32>.size)
                if zmq_bind(s, endpoint) != 0 {
                    Glibc.close(fd)
                    throw ZMQError.last("zmq_bind(\(endpoint))")
                }
            case .tcp:
                if let keys = security.serverKeys {
                    Self.setString(s, ZMQ_ZAP_DOMAIN, ZAPHandler.domain)
                    var one: Int32 = 1
                    zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, MemoryLayout<Int32>.size)
                    Self.setString(s, ZMQ_CURVE_SECRETKEY, keys.secretKey)
                }
                if zmq_bind(s, endpoint) != 0 { throw ZMQError.last("zmq_bind(\(endpoint))") }
            }
        }
        logger.info("memory manager events published on \(endpoint)")
    }

    private static func setString(_ s: UnsafeMutableRawPointer, _ option: Int32, _ value: String) {
        _ = value.utf8CString.withUnsafeBufferPointer { zmq_setsockopt(s, option, $0.baseAddress, $0.count - 1) }
    }

    /// Numbers `event`, stamps the time and sends it (asynchronously; never blocks the caller).
    func publish(_ event: Kvd_V1_Event) {
        var e = event
        e.sequenceNumber = numbering.add(1, ordering: .relaxed).newValue
        e.timeUnixMs = UInt64(Date().timeIntervalSince1970 * 1000)
        guard let payload: [UInt8] = try? e.serializedBytes() else { return }
        let topic = Array("kvd.\(e.tenant)".utf8)
        queue.async { [self] in
            dispatchPrecondition(condition: .onQueue(queue))
            guard let s = socket else { return }
            _ = topic.withUnsafeBytes { zmq_send(s, $0.baseAddress, $0.count, ZMQ_SNDMORE | ZMQ_DONTWAIT) }
            // A full queue (a slow subscriber) drops the event; its number leaves a gap.
            _ = payload.withUnsafeBytes { zmq_send(s, $0.baseAddress, $0.count, ZMQ_DONTWAIT) }
        }
    }

    /// Closes the socket (before the context is terminated) and removes the ipc socket file.
    func close() {
        queue.sync {
            dispatchPrecondition(condition: .onQueue(queue))
            if let s = socket { zmq_close(s) }
            socket = nil
            socketFile?.removeIfUnchanged()
            socketFile = nil
        }
    }
}
