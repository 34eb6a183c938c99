import KVDCore
import KVDRemote

/// Cross-daemon prefix sharing (remote.share_prefixes, docs/REMOTE.md): on a local miss, the
/// blocks of a prompt that other daemons published are fetched from the store, checked, written
/// into fresh pages and indexed here as cached blocks, so the adopt or Lookup that follows finds
/// them like blocks this daemon computed. Runs on a worker (it waits for the store).
enum RemotePrefixImport {
    /// Imports the blocks of `hashes` (a prompt's chain, block 0 first) after the longest run this
    /// daemon holds, until the store misses one, one fails its checks, or pages run out. Never
    /// serves a block it could not verify: a bad one ends the run, counted as rejected.
    static func importMissing(_ hashes: [PrefixHash], model: ModelLayout, _ store: TenantStore) {
        guard let remote = store.shared.remote, remote.settings.sharePrefixes, !hashes.isEmpty else { return }
        let space = store.space
        let c = space.remoteCounters
        var next = space.prefix.cachedRun(hashes)
        while next < hashes.count {
            let hash = hashes[next]
            let parent = next == 0 ? PrefixHash.root : hashes[next - 1]
            let bytes: [UInt8]?
            do throws(RemoteError) { bytes = try remote.fetchBlock(space, hash: hash) } catch { return }
            guard let bytes else { return }
            let block: PrefixBlockBlob
            do throws(DurableFormatError) {
                block = try PrefixBlockBlob.decode(bytes, hash: hash, parent: parent, block: next, layout: model)
            } catch {
                c.importRejected.add(1, ordering: .relaxed)
                store.shared.logger?.warning("remote prefix block \(hash) refused: \(error.message)")
                return
            }
            let pages: [PageID]
            do throws(KVDError) { pages = try store.pages.allocate(model.headCount) } catch { return }
            block.write(into: pages, memory: store.arena.pageMemory)
            // The index takes its own reference; ours goes, so the block is cached, held by no sequence.
            let indexed = space.prefix.importBlock(hash: hash, parent: parent, pages: pages)
            store.pages.release(pages)
            guard indexed else { return }
            c.imported.add(1, ordering: .relaxed)
            next += 1
        }
    }
}
