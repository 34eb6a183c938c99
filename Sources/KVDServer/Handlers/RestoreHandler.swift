import Dispatch
import KVDCore
import KVDProtocol
import KVDRemote

/// Restore: brings back a sequence the memory manager evicted to the remote tier, under its id, in
/// the caller's tenant (docs/REMOTE.md). Runs on a worker: it may wait for the store.
enum RestoreHandler {
    static func handle(_ r: Kvd_V1_RestoreRequest, _ store: TenantStore) throws(KVDError) -> Kvd_V1_RestoreResponse {
        let start = DispatchTime.now().uptimeNanoseconds
        let id = r.sequenceID
        guard id != 0 else { throw .invalidArgument("restore.sequence_id must be set (non-zero)") }
        let space = store.space
        let c = space.remoteCounters
        guard let remote = store.shared.remote else {
            throw .failedPrecondition("restore: this daemon has no remote tier (remote.enabled is false)")
        }
        if (try? store.entry(id)) != nil { throw .alreadyExists("restore: sequence \(id) is live; there is nothing to restore") }
        guard space.evictions.offloaded(id) else {
            throw space.evictions.error(for: id) ?? .notFound("restore: sequence \(id) was never offloaded to the remote tier")
        }
        // A blob from the store is read into its pages while it arrives (SequenceBlob.Arrival).
        let arrival = SequenceBlob.Arrival(
            layouts: { name in store.shared.models[name] },
            allocate: { (n: Int) throws(KVDError) -> [PageID] in
                try store.withRoom(pages: n) { () throws(KVDError) in try store.pages.allocate(n) }
            },
            release: { _ = store.pages.release($0) },
            memory: store.arena.pageMemory)
        let found: RemoteTier.Fetched?
        do throws(RemoteError) { found = try remote.fetch(space, id: id, into: arrival) } catch {
            arrival.abandon()
            c.restoreFailures.add(1, ordering: .relaxed)
            throw .unavailable("restore: the remote tier did not answer for sequence \(id) (\(error.description)); try again")
        }
        guard let found else {
            arrival.abandon()
            c.restoreFailures.add(1, ordering: .relaxed)
            throw .evicted("restore: the remote tier no longer holds sequence \(id) (expired or removed); create it again and re-run prefill")
        }
        let restored: KVSequence
        let fromRemote: Bool
        switch found {
        case .remote:
            fromRemote = true
            switch arrival.finish(id: SequenceID(id), tenant: space.name) {
            case .success(let s): restored = s
            case .failure(.noRoom(let error)): throw error  // the store keeps its copy: a later Restore may fit
            case .failure(.unusable(let error)): throw unusable(error, id, space, remote)
            }
        case .queued(let bytes):
            fromRemote = false
            let blob: SequenceBlob
            do throws(DurableFormatError) {
                blob = try SequenceBlob.decode(bytes) { name in store.shared.models[name] }
            } catch {
                throw unusable(error, id, space, remote)
            }
            guard blob.image.id == id else {
                throw unusable(DurableFormatError("the copy under its key holds sequence \(blob.image.id)"), id, space, remote)
            }
            let need = blob.image.heads.reduce(0) { $0 + HeadCache.pagesNeeded($1.count, pageTokens: blob.layout.pageTokens) }
            restored = try store.withRoom(pages: need) { () throws(KVDError) in
                try blob.restore(id: SequenceID(id), tenant: space.name, allocator: store.pages, memory: store.arena.pageMemory)
            }
        }
        do throws(KVDError) {
            _ = try store.create(requested: id, pinned: false) { _ throws(KVDError) in (restored, nil) }
        } catch {
            _ = restored.release(allocator: store.pages)
            throw error
        }
        remote.drop(space, id: id)
        let us = (DispatchTime.now().uptimeNanoseconds - start) / 1000
        c.restored.add(1, ordering: .relaxed)
        c.lastRestoreMicroseconds.store(us, ordering: .relaxed)
        c.totalRestoreMicroseconds.add(us, ordering: .relaxed)
        var out = Kvd_V1_RestoreResponse()
        out.sequenceID = id
        out.length = UInt64(restored.length)
        out.generation = restored.generation
        out.fromRemote = fromRemote
        out.restoreUs = us
        out.bytes = UInt64(restored.heads.reduce(0) { $0 + 2 * $1.count } * restored.layout.tokenBytes)
        return out
    }

    /// A copy that fails its checks is never served: the id is recorded as lost and the copy deleted.
    private static func unusable(_ error: DurableFormatError, _ id: UInt64, _ space: TenantSpace, _ remote: RemoteTier) -> KVDError {
        space.remoteCounters.restoreCorrupted.add(1, ordering: .relaxed)
        space.evictions.record(id, "lost: its remote copy could not be read (\(error.message))")
        remote.drop(space, id: id)
        return .evicted("restore: the remote copy of sequence \(id) is unusable (\(error.message)); it is lost: create it again and re-run prefill")
    }
}

/// The remote tier's reader fills an arrival's pages straight from the socket. (KVDCore, where the
/// arrival lives, does not depend on the Redis layer, so the conformance is stated here.)
extension SequenceBlob.Arrival: ValueSink {}
