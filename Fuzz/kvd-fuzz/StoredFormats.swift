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
/// must encode back to exactly the same bytes (the format has one spelling per blob).
extension Harness {
    func decodeBlob(_ input: ArraySlice<UInt8>) {
        let bytes = Array(input)
        guard let blob = try? SequenceBlob.decode(bytes, layouts: { self.models[$0] }) else { return }
        if blob.encoded() != bytes { fatalError("a decoded blob does not encode back to its bytes") }
    }
}
