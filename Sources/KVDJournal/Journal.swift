import KVDCore
import Synchronization

/// One segment's journal: every durable change is appended as a frame with a single `write`
/// before the request that made it is answered, and applied to a `DurableState` kept here, which
/// a checkpoint writes out as a snapshot (then the journal starts over). A restart reads the
/// snapshot and the journal back (`recover`). Thread-safe: writers from every sequence queue take
/// the lock, so frames are whole and in the order their changes were made.
public final class Journal: Sendable {
    public struct Paths: Sendable {
        public let journal: String
        public let snapshot: String
        /// `directory`/`name`.journal and .snapshot; `name` is the segment's name without its '/'.
        public init(directory: String, segment: String) {
            let base = directory + "/" + segment.drop { $0 == "/" }
            journal = base + ".journal"
            snapshot = base + ".snapshot"
        }
    }

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// What `recover` found.
    public struct Recovery: Sendable {
        public var snapshotRecords = 0
        public var journalRecords = 0
        /// Bytes of a torn last frame cut off (a request that was never answered).
        public var tornBytes = 0
    }

    public let paths: Paths
    private let segmentTag: UInt64
    private let checkpointBytes: Int
    private struct State {
        var fd: Int32
        var sequence: UInt64
        var journalBytes: Int
        var model: DurableState
        var checkpoints = 0
    }
    private let state: Mutex<State>

    private init(paths: Paths, segmentTag: UInt64, checkpointBytes: Int, fd: Int32, sequence: UInt64, journalBytes: Int, model: DurableState) {
        self.paths = paths
        self.segmentTag = segmentTag
        self.checkpointBytes = checkpointBytes
        state = Mutex(State(fd: fd, sequence: sequence, journalBytes: journalBytes, model: model))
    }

    deinit { state.withLock { FileSyscalls.close($0.fd) } }

    /// Starts an empty journal for a new segment, removing files a previous one left.
    public static func create(paths: Paths, segmentTag: UInt64, model: DurableState, checkpointBytes: Int) throws(Failure) -> Journal {
        do throws(FileSyscalls.Failure) {
            try FileSyscalls.remove(paths.snapshot)
            let fd = try startJournal(paths, JournalFormat.Header(sequence: 0, segmentTag: segmentTag))
            return Journal(paths: paths, segmentTag: segmentTag, checkpointBytes: checkpointBytes, fd: fd, sequence: 0,
                           journalBytes: JournalFormat.headerBytes, model: model)
        } catch {
            throw Failure(message: error.description)
        }
    }

    /// Reads the snapshot and the journal a previous process left for segment `segmentTag` into
    /// `empty` and continues that journal. Refuses files of another segment or format, and
    /// records that do not fit; cuts a torn last frame off.
    public static func recover(paths: Paths, segmentTag: UInt64, into empty: DurableState, checkpointBytes: Int)
        throws(Failure) -> (journal: Journal, state: DurableState, recovery: Recovery)
    {
        var model = empty
        var report = Recovery()
        do {
            var base: UInt64 = 0
            if let bytes = try FileSyscalls.readAll(paths.snapshot) {
                let h = try JournalFormat.readHeader(bytes, magic: JournalFormat.snapshotMagic, file: paths.snapshot)
                try requireTag(h, segmentTag, paths.snapshot)
                let (frames, end) = try JournalFormat.frames(bytes, from: JournalFormat.headerBytes)
                guard end == bytes.count else { throw DurableFormatError("\(paths.snapshot) is damaged at byte \(end)") }
                for f in frames { try model.apply(f.record) }
                base = h.sequence
                report.snapshotRecords = frames.count
            }
            guard let bytes = try FileSyscalls.readAll(paths.journal) else {
                throw DurableFormatError("\(paths.journal) is missing")
            }
            let h = try JournalFormat.readHeader(bytes, magic: JournalFormat.journalMagic, file: paths.journal)
            try requireTag(h, segmentTag, paths.journal)
            guard h.sequence <= base else {
                throw DurableFormatError("\(paths.journal) continues snapshot \(h.sequence) but the snapshot is \(base)")
            }
            let (frames, end) = try JournalFormat.frames(bytes, from: JournalFormat.headerBytes)
            var sequence = base
            for f in frames where f.sequence > base {
                guard f.sequence == sequence + 1 else { throw DurableFormatError("\(paths.journal): record \(f.sequence) follows \(sequence)") }
                try model.apply(f.record)
                sequence = f.sequence
                report.journalRecords += 1
            }
            report.tornBytes = bytes.count - end
            let fd = try FileSyscalls.openAppend(paths.journal)
            if report.tornBytes > 0 { try FileSyscalls.truncate(fd, to: end, paths.journal) }
            let journal = Journal(paths: paths, segmentTag: segmentTag, checkpointBytes: checkpointBytes, fd: fd,
                                  sequence: sequence, journalBytes: end, model: model)
            return (journal, model, report)
        } catch let e as DurableFormatError {
            throw Failure(message: e.message)
        } catch let e as FileSyscalls.Failure {
            throw Failure(message: e.description)
        } catch {
            throw Failure(message: "\(error)")
        }
    }

    private static func requireTag(_ h: JournalFormat.Header, _ tag: UInt64, _ file: String) throws(DurableFormatError) {
        guard h.segmentTag == tag else {
            throw DurableFormatError("\(file) belongs to segment generation \(h.segmentTag), not this segment's \(tag)")
        }
    }

    private static func startJournal(_ paths: Paths, _ header: JournalFormat.Header) throws(FileSyscalls.Failure) -> Int32 {
        let tmp = paths.journal + ".tmp"
        let fd = try FileSyscalls.create(tmp)
        do throws(FileSyscalls.Failure) {
            try FileSyscalls.writeAll(fd, JournalFormat.header(JournalFormat.journalMagic, header), tmp)
        } catch {
            FileSyscalls.close(fd)
            throw error
        }
        FileSyscalls.close(fd)
        try FileSyscalls.rename(tmp, paths.journal)
        return try FileSyscalls.openAppend(paths.journal)
    }

    /// Makes `record` durable (in the kernel, one `write`) and applies it to the kept state;
    /// checkpoints when the journal has grown past `checkpointBytes`. A record that does not fit
    /// the state is a bug in the caller and traps (the daemon restarts and recovers from what was
    /// written before it).
    public func write(_ record: JournalRecord) throws(Failure) {
        let r: Result<Void, Failure> = state.withLock { s in
            let next = s.sequence + 1
            let frame = JournalFormat.frame(record, sequence: next)
            do throws(FileSyscalls.Failure) {
                try FileSyscalls.writeAll(s.fd, frame, paths.journal)
            } catch {
                return .failure(Failure(message: error.description))
            }
            s.sequence = next
            s.journalBytes += frame.count
            do throws(DurableFormatError) { try s.model.apply(record) } catch {
                preconditionFailure("journal record \(next) does not fit the state: \(error.message)")
            }
            if s.journalBytes > checkpointBytes {
                // A failed checkpoint leaves the old snapshot and the journal, which still recover.
                _ = checkpoint(&s)
            }
            return .success(())
        }
        try r.get()
    }

    /// Writes the kept state as a new snapshot and starts an empty journal after it.
    public func checkpoint() throws(Failure) {
        let r: Result<Void, Failure> = state.withLock { s in checkpoint(&s) }
        try r.get()
    }

    private func checkpoint(_ s: inout State) -> Result<Void, Failure> {
        do throws(FileSyscalls.Failure) {
            let header = JournalFormat.Header(sequence: s.sequence, segmentTag: segmentTag)
            var bytes = JournalFormat.header(JournalFormat.snapshotMagic, header)
            for record in s.model.snapshot() { bytes += JournalFormat.frame(record, sequence: 0) }
            let tmp = paths.snapshot + ".tmp"
            let fd = try FileSyscalls.create(tmp)
            do throws(FileSyscalls.Failure) { try FileSyscalls.writeAll(fd, bytes, tmp) } catch {
                FileSyscalls.close(fd)
                throw error
            }
            FileSyscalls.close(fd)
            // The snapshot is in place before the journal restarts: a crash between the two
            // renames leaves a journal whose records the snapshot already holds (skipped).
            try FileSyscalls.rename(tmp, paths.snapshot)
            let fd2 = try Self.startJournal(paths, header)
            FileSyscalls.close(s.fd)
            s.fd = fd2
            s.journalBytes = JournalFormat.headerBytes
            s.checkpoints += 1
            return .success(())
        } catch {
            return .failure(Failure(message: error.description))
        }
    }

    /// A copy of the kept state (tests, and Stats).
    public var current: DurableState { state.withLock { $0.model } }
    public var checkpoints: Int { state.withLock { $0.checkpoints } }
    public var journalBytes: Int { state.withLock { $0.journalBytes } }

    /// Removes both files (a segment that is going away for good).
    public func removeFiles() {
        try? FileSyscalls.remove(paths.journal)
        try? FileSyscalls.remove(paths.snapshot)
    }
}
