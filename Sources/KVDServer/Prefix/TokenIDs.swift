import Foundation
import KVDCore

/// Token ids as they travel: `bytes`, uint32 little-endian, 4 bytes per token.
enum TokenIDs {
    /// The ids in `bytes`. `expected` (when given) is how many tokens the request adds: a different
    /// count is refused, since ids that do not match the K/V would index the wrong prompt.
    static func parse(_ bytes: Data, field: String, expected: Int? = nil) throws(KVDError) -> [UInt32] {
        guard bytes.count % 4 == 0 else {
            throw .invalidArgument("\(field): \(bytes.count) bytes is not a whole number of uint32 little-endian token ids (4 bytes each)")
        }
        let n = bytes.count / 4
        if let expected, n != expected {
            throw .invalidArgument("\(field): \(n) token ids for \(expected) tokens; send exactly one id per token added, or none")
        }
        var out = [UInt32](repeating: 0, count: n)
        bytes.withUnsafeBytes { raw in
            for i in 0..<n { out[i] = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
        }
        return out
    }
}

/// Keeps a sequence's `PrefixTracker` in step with its tokens and indexes the pages it fills.
enum PrefixRecorder {
    /// The tracker a new (empty) sequence of `model` starts with: nil when prefix reuse is off.
    static func fresh(_ model: ModelLayout, _ prefix: TenantPrefix) -> PrefixTracker? {
        prefix.hasher(model.name) == nil ? nil : PrefixTracker(pageTokens: model.pageTokens)
    }

    /// After tokens were added to `state`'s sequence (`ids`: theirs, nil when the request sent
    /// none): hashes the blocks they filled and indexes those pages. A sequence that was compacted
    /// or aliased, or got tokens without ids, stops being tracked for good.
    static func added(_ ids: [UInt32]?, _ state: SequenceState, _ store: TenantStore) {
        let prefix = store.space.prefix
        guard var t = state.prefix else { return }
        let seq = state.sequence
        guard let ids, let hasher = prefix.hasher(seq.layout.name), !seq.everCompacted,
              !seq.aliases.contains(where: { $0 != nil }), t.tokens == seq.length - ids.count
        else {
            state.prefix = nil
            return
        }
        let full = t.add(ids, hasher: hasher)
        state.prefix = t
        guard !full.isEmpty else { return }
        // Never compacted: head h's page b holds tokens b*P ..< (b+1)*P, now all written — less
        // the leading pages a sliding layer dropped, (length - count) / P of them. The blocks this
        // request filled are all still held: window frees run after this (WindowFrees).
        let pageTokens = seq.layout.pageTokens
        let added = prefix.insert(full, pages: full.map { b in
            seq.heads.map { head in head.pages[b.block - (seq.length - head.count) / pageTokens] }
        })
        // Shared with other daemons through the remote tier: full pages are never written again,
        // so copying them here (on the sequence's queue) reads settled bytes.
        if let remote = store.shared.remote, remote.settings.sharePrefixes {
            for (b, pages) in added {
                remote.publish(store.space, PrefixBlockBlob(
                    hash: b.hash, parent: b.parent, block: b.block, pages: pages, layout: seq.layout, memory: store.arena.pageMemory))
            }
        }
    }
}
