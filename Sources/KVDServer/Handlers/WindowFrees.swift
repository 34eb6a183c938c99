import KVDCore

/// After an Append or Commit: sliding-window layers drop the pages that fell out of their window
/// (docs/MEMORY.md, "Sliding windows"). Runs after the journal recorded the append (replaying it
/// drops the same pages, so no record of its own is needed and the pages go back only once the
/// change that freed them is durable) and after the prefix index took the blocks the append
/// filled (so every indexed block holds every head's page).
enum WindowFrees {
    static func apply(_ seq: KVSequence, _ store: TenantStore) {
        guard seq.layout.hasSlidingLayers else { return }
        let f = seq.freeOutOfWindow(allocator: store.pages)
        guard f.released > 0 else { return }
        store.space.counters.windowFreedPages.add(UInt64(f.released), ordering: .relaxed)
        store.space.counters.windowReturnedPages.add(UInt64(f.freed), ordering: .relaxed)
    }
}
