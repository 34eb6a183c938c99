import Synchronization

/// Replies produced on worker threads, waiting for the socket thread to send them.
final class Outbox: Sendable {
    private let pending = Mutex<[[[UInt8]]]>([])
    private let wakeSignal: WakeSignal

    init(wake: WakeSignal) { wakeSignal = wake }

    func post(_ frames: [[UInt8]]) {
        pending.withLock { $0.append(frames) }
        wakeSignal.wake()
    }

    func takeAll() -> [[[UInt8]]] {
        pending.withLock { p in
            defer { p.removeAll(keepingCapacity: true) }
            return p
        }
    }

    var isEmpty: Bool { pending.withLock { $0.isEmpty } }
}
