import KVDCore

/// Journal mode: what a restart reads back from a durability journal (docs/DURABILITY.md). The
/// rest of the input is records, each a 2-byte little-endian length and that many bytes of a
/// `JournalRecord`; each is decoded and, when it decodes, applied to a `DurableState` of the
/// harness's models over a 64-page segment, and the page holders are rebuilt after each. A torn,
/// corrupt or inconsistent record must be an error, never a trap; the state must stay valid.
extension Harness {
    func replayJournal(_ input: ArraySlice<UInt8>) {
        let bytes = Array(input)
        var state = DurableState(layouts: Array(models.values), pageCount: 64)
        var at = 0
        while at + 2 <= bytes.count {
            let length = Int(bytes[at]) | Int(bytes[at + 1]) << 8
            at += 2
            let end = min(bytes.count, at + length)
            var reader = KVDCore.ByteReader(bytes, from: at, to: end)
            at = end
            guard let record = try? JournalRecord.decode(&reader) else { continue }
            // A record that decodes must encode back to the same record.
            var again = KVDCore.ByteReader(record.encoded)
            guard (try? JournalRecord.decode(&again)) == record else { fatalError("journal record does not round-trip: \(record)") }
            let before = state.sequences
            do {
                try state.apply(record)
            } catch {
                // Refused: nothing changed.
                if state.sequences != before { fatalError("a refused record changed the state: \(error)") }
                continue
            }
            if let holders = try? state.holders() {
                if holders.count != 64 || holders.contains(where: { $0 < 0 }) { fatalError("holders out of shape") }
            }
        }
    }
}

/// Blob mode: what Restore reads back from the remote tier. The rest of the input is a candidate
/// `SequenceBlob`; decoding it against the harness's models must never trap, and one that decodes
/// must encode back to exactly the same bytes (the format has one spelling per blob). The same
/// bytes restored while arriving (`SequenceBlob.Arrival`, in pieces whose sizes the input's first
/// byte picks) must agree with `decode` — restored exactly when it decodes, with the same
/// bookkeeping — and must give back every page it took whether it succeeds or not.
extension Harness {
    /// Pages for blob mode's arrivals, apart from the daemon's segment.
    static let blobPages = 512
    static let blobArena: (memory: PageMemory, allocator: PageAllocator) = {
        let pageBytes = 4096 * 64  // more than any harness model's page
        let g = PageGeometry(pagesOffset: 0, pageBytes: pageBytes, pageCount: blobPages)
        let base = UnsafeMutableRawPointer.allocate(byteCount: pageBytes * blobPages, alignment: 64)  // lives as long as the process
        return (PageMemory(base: base, geometry: g), PageAllocator(pageCount: blobPages))
    }()

    func decodeBlob(_ input: ArraySlice<UInt8>) {
        let piece = Int(input.first ?? 0) + 1
        let bytes = Array(input.dropFirst())
        let decoded = try? SequenceBlob.decode(bytes, layouts: { self.models[$0] })
        if let decoded, decoded.encoded() != bytes { fatalError("a decoded blob does not encode back to its bytes") }
        let arena = Self.blobArena
        let a = SequenceBlob.Arrival(layouts: { self.models[$0] },
                                     allocate: { (n: Int) throws(KVDError) -> [PageID] in try arena.allocator.allocate(n) },
                                     release: { _ = arena.allocator.release($0) }, memory: arena.memory)
        a.begin(length: bytes.count)
        var at = 0
        while at < bytes.count {
            let end = min(bytes.count, at + piece)
            bytes[at..<end].withUnsafeBytes { a.arrive($0) }
            at = end
        }
        let id = decoded?.image.id ?? 1
        switch a.finish(id: SequenceID(id), tenant: "fuzz") {
        case .success(let s):
            guard let decoded else { fatalError("a blob restored while arriving that decode refuses") }
            if s.heads.map({ $0.count }) != decoded.image.heads.map({ $0.count }) { fatalError("arrival and decode disagree") }
            _ = s.release(allocator: arena.allocator)
        case .failure(.noRoom):
            break  // more pages than the scratch arena has: nothing to compare
        case .failure(.unusable):
            if decoded != nil { fatalError("decode accepts a blob that arrival refuses") }
        }
        if arena.allocator.freeCount != Self.blobPages { fatalError("an arrival kept pages") }
    }
}
