import KVDCore

/// The byte layout of the journal and snapshot files (docs/DURABILITY.md).
///
/// Both start with a 32-byte header: magic (8), format version (u32), reserved (u32), a sequence
/// number (u64: the snapshot's last included record; the journal's base, i.e. the snapshot it
/// continues) and the segment tag (u64: the arena generation, so files left by another segment
/// are never applied to this one). Then frames: payload length (u32), record number (u64),
/// checksum (u64: SipHash-2-4 of the record number and payload under a fixed key), payload (one
/// `JournalRecord`). A frame that is cut short or fails its checksum ends the journal: it is the
/// record of a request that was never answered.
enum JournalFormat {
    static let journalMagic = Array("KVDJRNL1".utf8)
    static let snapshotMagic = Array("KVDSNAP1".utf8)
    static let version: UInt32 = 1
    static let headerBytes = 32
    static let frameHeaderBytes = 20
    /// Larger payloads are refused as corrupt: no record of a valid segment comes near it.
    static let maxPayload = 1 << 30
    /// A fixed key: the checksum finds torn and corrupt frames, it authenticates nothing.
    static let checksumKey = SipKey(k0: 0x6B76_645F_6A72_6E6C, k1: 0x6368_6563_6B73_756D)

    struct Header: Equatable {
        var sequence: UInt64
        var segmentTag: UInt64
    }

    static func header(_ magic: [UInt8], _ h: Header) -> [UInt8] {
        var w = ByteWriter()
        w.raw(magic)
        w.u32(version)
        w.u32(0)
        w.u64(h.sequence)
        w.u64(h.segmentTag)
        return w.bytes
    }

    static func readHeader(_ bytes: [UInt8], magic: [UInt8], file: String) throws(DurableFormatError) -> Header {
        var r = ByteReader(bytes)
        let m = try r.raw(8, "\(file) magic")
        guard m == magic else { throw DurableFormatError("\(file) is not a kvd \(magic == journalMagic ? "journal" : "snapshot") (bad magic)") }
        let v = try r.u32("\(file) version")
        guard v == version else { throw DurableFormatError("\(file) has format version \(v); this kvd reads version \(version)") }
        _ = try r.u32("\(file) reserved")
        return Header(sequence: try r.u64("\(file) sequence"), segmentTag: try r.u64("\(file) segment tag"))
    }

    static func checksum(_ sequence: UInt64, _ payload: [UInt8]) -> UInt64 {
        var w = ByteWriter()
        w.u64(sequence)
        w.raw(payload)
        return SipHash.hash64(w.bytes, key: checksumKey)
    }

    static func frame(_ record: JournalRecord, sequence: UInt64) -> [UInt8] {
        let payload = record.encoded
        var w = ByteWriter()
        w.u32(UInt32(payload.count))
        w.u64(sequence)
        w.u64(checksum(sequence, payload))
        w.raw(payload)
        return w.bytes
    }

    struct Frame {
        let sequence: UInt64
        let record: JournalRecord
        /// Offset just past this frame.
        let end: Int
    }

    /// The frames from `offset` on, up to the first torn or corrupt one; `end` is where the valid
    /// part stops. A checksummed frame whose payload does not decode is an error (a format bug,
    /// not a torn write).
    static func frames(_ bytes: [UInt8], from offset: Int) throws(DurableFormatError) -> (frames: [Frame], end: Int) {
        var out: [Frame] = []
        var at = offset
        while bytes.count - at >= frameHeaderBytes {
            var r = ByteReader(bytes, from: at)
            let length = Int(try r.u32("frame length"))
            let sequence = try r.u64("frame sequence")
            let sum = try r.u64("frame checksum")
            guard length <= maxPayload, length <= r.remaining else { break }
            let payload = try r.raw(length, "frame payload")
            guard checksum(sequence, payload) == sum else { break }
            var pr = ByteReader(payload)
            let record = try JournalRecord.decode(&pr)
            at = r.offset
            out.append(Frame(sequence: sequence, record: record, end: at))
        }
        return (out, at)
    }
}
