import Dispatch
import KVDCore

extension Store {
    /// Serves again what `state` (recovered from `space`'s journal) describes: the page counts,
    /// every sequence with its id, generation and pin, and the prefix index. Leases start now, owned
    /// by no connection: a client that names a sequence (or lists it in KeepAlive) takes it over;
    /// one nobody claims becomes an orphan after memory.lease_seconds, as if its client had gone.
    func restore(_ space: TenantSpace, _ state: DurableState, holders: [Int]) {
        space.pages.restore(holders: holders)
        let now = DispatchTime.now().uptimeNanoseconds
        for id in state.sequences.keys.sorted() {
            let image = state.sequences[id]!
            // DurableState only admits images of configured models.
            let seq = KVSequence(restoring: image, layout: models[image.model]!, tenant: space.name)
            let entry = SequenceEntry(sequence: seq, space: space, target: workers, owner: 0, now: now, pinned: image.pinned)
            entry.sync { entry.refreshGauges($0) }
            space.insertRestored(entry)
        }
        countRestored(state.sequences.count)
        let blocks = state.blocks.sorted { $0.value.depth < $1.value.depth }
        space.prefix.restore(blocks.map { (hash: $0.key, parent: $0.value.parent, pages: $0.value.pages) })
    }
}
