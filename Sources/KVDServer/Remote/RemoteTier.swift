import Dispatch
import KVDConfig
import KVDCore
import KVDRemote
import Synchronization

/// The remote tier of one daemon (docs/REMOTE.md): sequences the memory manager evicts are shipped
/// to the store as `SequenceBlob`s and fetched back by Restore.
///
/// Every store operation runs on `queue` (a serial queue: never the socket thread, never a
/// sequence's queue), so the connection needs no lock. An offload is asynchronous: the blob waits in
/// `pending` (bounded by `remote.queue_bytes`) until shipped, and a Restore that comes first takes
/// it from there. A Restore fetch blocks the worker it runs on, not the socket thread.
final class RemoteTier: Sendable {
    let settings: Configuration.Remote
    let queue = DispatchQueue(label: "kvd.remote")
    private let connection: QueueConfined<RemoteKV?>
    private let connect: @Sendable () -> RemoteKV
    private struct Pending {
        var blobs: [String: [UInt8]] = [:]
        var bytes = 0
    }
    private let pending = Mutex(Pending())
    /// Buffers of blobs already shipped, for the next offloads to write into: their pages are
    /// mapped, where a fresh multi-megabyte buffer would fault on every page.
    private let spares = Mutex<[[UInt8]]>([])
    /// Memory kept that way, at most (so a burst of huge blobs does not stay resident).
    static let maxSpareBytes = 64 << 20

    init(settings: Configuration.Remote, connect: @escaping @Sendable () -> RemoteKV) {
        self.settings = settings
        self.connect = connect
        connection = QueueConfined(nil, queue: queue)
    }

    /// The store key of sequence `id` of `tenant`: `<key_prefix><tenant>:seq:<id>`.
    func key(tenant: String, id: UInt64) -> String { "\(settings.keyPrefix)\(tenant):seq:\(id)" }

    /// The client, connected on first use (on `queue`).
    private func client() -> RemoteKV {
        dispatchPrecondition(condition: .onQueue(queue))
        if let c = connection.value { return c }
        let c = connect()
        connection.value = c
        return c
    }

    /// The store key of a cached prompt block: `<block_key_prefix><tenant>:blk:<hash>`.
    func blockKey(tenant: String, hash: PrefixHash) -> String { "\(settings.effectiveBlockKeyPrefix)\(tenant):blk:\(hash)" }

    /// Queues evicted sequence `id`'s blob for shipping; false (and nothing queued) when the queue
    /// has no room for it. A failed shipment records the sequence as lost.
    func offload(_ space: TenantSpace, id: UInt64, blob: [UInt8]) -> Bool {
        let c = space.remoteCounters
        return enqueue(key(tenant: space.name, id: id), blob, dropped: c.offloadDropped) { bytes in
            c.offloaded.add(1, ordering: .relaxed)
            c.offloadedBytes.add(UInt64(bytes), ordering: .relaxed)
        } failed: { error, stillQueued in
            c.offloadFailures.add(1, ordering: .relaxed)
            c.lastFailure.withLock { $0 = error.description }
            // Unless a Restore took it meanwhile, the sequence is lost: its id says so now.
            if stillQueued {
                space.evictions.record(id, "evicted by the memory manager, and its offload to the remote tier failed (\(error.description))")
            }
        }
    }

    /// Queues a cached prompt block for other daemons (remote.share_prefixes).
    func publish(_ space: TenantSpace, _ block: PrefixBlockBlob) {
        let c = space.remoteCounters
        _ = enqueue(blockKey(tenant: space.name, hash: block.hash), block.encoded(), dropped: c.publishDropped) { _ in
            c.published.add(1, ordering: .relaxed)
        } failed: { error, _ in
            c.publishFailures.add(1, ordering: .relaxed)
            c.lastFailure.withLock { $0 = error.description }
        }
    }

    /// A stored prompt block's bytes, or nil (call from a worker: it waits for the store).
    func fetchBlock(_ space: TenantSpace, hash: PrefixHash) throws(RemoteError) -> [UInt8]? {
        let k = Array(blockKey(tenant: space.name, hash: hash).utf8)
        let got: Result<[UInt8]?, RemoteError> = queue.sync {
            do throws(RemoteError) { return .success(try client().get(k)) } catch { return .failure(error) }
        }
        return try got.get()
    }

    /// Puts `blob` in the bounded queue under `k` and ships it on `queue`; false when it does not fit.
    private func enqueue(
        _ k: String, _ blob: [UInt8], dropped: borrowing Atomic<UInt64>,
        shipped: @escaping @Sendable (Int) -> Void, failed: @escaping @Sendable (RemoteError, Bool) -> Void
    ) -> Bool {
        let limit = settings.queueBytes
        let accepted = pending.withLock { p in
            guard p.bytes + blob.count <= limit else { return false }
            if let old = p.blobs.updateValue(blob, forKey: k) { p.bytes -= old.count }
            p.bytes += blob.count
            return true
        }
        guard accepted else {
            dropped.add(1, ordering: .relaxed)
            return false
        }
        queue.async { [self] in
            // A Restore may have taken it meanwhile: then there is nothing to ship.
            guard let bytes = pending.withLock({ $0.blobs[k] }) else { return }
            do throws(RemoteError) {
                try client().set(Array(k.utf8), bytes, ttlSeconds: settings.ttlSeconds)
                shipped(bytes.count)
            } catch {
                failed(error, pending.withLock { $0.blobs[k] != nil })
            }
            pending.withLock { p in
                if let b = p.blobs[k], b.count == bytes.count {
                    p.blobs[k] = nil
                    p.bytes -= b.count
                }
            }
            recycle(bytes)
        }
        return true
    }

    /// A shipped blob's buffer, or an empty array when there is none.
    func spareBuffer() -> [UInt8] { spares.withLock { $0.popLast() ?? [] } }

    private func recycle(_ buffer: [UInt8]) {
        spares.withLock { s in
            if s.reduce(buffer.capacity, { $0 + $1.capacity }) <= Self.maxSpareBytes { s.append(buffer) }
        }
    }

    /// A fetched blob: from the store (read into the sink as it came) or from the offload queue
    /// (never shipped: the sink saw nothing).
    enum Fetched {
        case remote(bytes: Int)
        case queued([UInt8])
    }

    /// The blob of sequence `id`: from the offload queue if not shipped yet (taken out of it), or
    /// from the store, read into `sink` as it arrives (call from a worker: it waits for the store;
    /// the sink is fed on `queue`). nil when neither has it.
    func fetch(_ space: TenantSpace, id: UInt64, into sink: ValueSink) throws(RemoteError) -> Fetched? {
        let k = key(tenant: space.name, id: id)
        let queued: [UInt8]? = pending.withLock { p in
            guard let b = p.blobs.removeValue(forKey: k) else { return nil }
            p.bytes -= b.count
            return b
        }
        if let queued { return .queued(queued) }
        let got: Result<Fetched?, RemoteError> = queue.sync {
            do throws(RemoteError) {
                return .success(try client().get(Array(k.utf8), into: sink).map { .remote(bytes: $0) })
            } catch { return .failure(error) }
        }
        return try got.get()
    }

    /// Deletes the store's copy of sequence `id` (restored, or found corrupted), in the background.
    func drop(_ space: TenantSpace, id: UInt64) {
        let k = key(tenant: space.name, id: id)
        queue.async { [self] in _ = try? client().delete([Array(k.utf8)]) }
    }

    /// Offloads waiting to be shipped, and their bytes.
    var queued: (count: Int, bytes: Int) { pending.withLock { ($0.blobs.count, $0.bytes) } }
}

/// A value only one serial queue may touch, asserted on every access.
/// Unchecked Sendable: the value is reached only through `value`, which checks it runs on `queue`.
final class QueueConfined<Value>: @unchecked Sendable {  // safe: every access asserts it is on `queue`
    private var stored: Value
    private let queue: DispatchQueue
    init(_ value: Value, queue: DispatchQueue) {
        stored = value
        self.queue = queue
    }
    var value: Value {
        get {
            dispatchPrecondition(condition: .onQueue(queue))
            return stored
        }
        set {
            dispatchPrecondition(condition: .onQueue(queue))
            stored = newValue
        }
    }
}
