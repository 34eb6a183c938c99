import Synchronization

/// Replies produced on worker threads, waiting for the socket thread to send them.
final class Outbox: Sendable {
    private let pending = Mutex<[OutgoingReply]>([])
    private let wakeSignal: WakeSignal

    init(wake: WakeSignal) { wakeSignal = wake }

    func post(_ reply: OutgoingReply) {
        pending.withLock { $0.append(reply) }
        wakeSignal.wake()
    }

    func takeAll() -> [OutgoingReply] {
        pending.withLock { p in
            defer { p.removeAll(keepingCapacity: true) }
            return p
        }
    }

    var isEmpty: Bool { pending.withLock { $0.isEmpty } }
}
