import Foundation
import KVDCore
import KVDJournal
import Testing

/// The journal and snapshot files: what was written comes back after the writer vanishes without
/// closing anything (as a killed process would), a torn last frame is cut off, checkpoints keep
/// the state, and files of another segment or format are refused with a message naming why.
@Suite struct JournalTests {
    static let layout = ModelLayout(name: "m", layers: 1, kvHeads: 2, qHeads: 2, headDim: 2, dtype: .f32, pageTokens: 4, defaultMethod: "x")

    final class Dir {
        let path: String
        init() {
            path = NSTemporaryDirectory() + "kvd-journal-" + UUID().uuidString
            try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        var paths: Journal.Paths { Journal.Paths(directory: path, segment: "/seg") }
    }

    func empty() -> DurableState { DurableState(layouts: [Self.layout], pageCount: 256) }

    /// A history over `n` sequences: create, two appends each, every third released.
    func history(_ n: Int) -> [JournalRecord] {
        var out: [JournalRecord] = []
        var page: UInt32 = 0
        func next() -> [PageID] { defer { page += 1 }; return [PageID(page)] }
        for i in 0..<n {
            let id = UInt64(100 + i)
            out.append(.put(SequenceImage(id: id, layout: Self.layout)))
            out.append(.append(id: id, tokens: 4, newPages: [next(), next()]))
            out.append(.append(id: id, tokens: 1, newPages: [next(), next()]))
            if i % 3 == 0 { out.append(.release(id: id)) }
        }
        return out
    }

    func replayed(_ records: [JournalRecord]) throws -> DurableState {
        var s = empty()
        for r in records { try s.apply(r) }
        return s
    }

    @Test func whatWasWrittenComesBack() throws {
        let dir = Dir()
        let records = history(10)
        do {
            let j = try Journal.create(paths: dir.paths, segmentTag: 7, model: empty(), checkpointBytes: 1 << 30)
            for r in records { try j.write(r) }
        }  // gone without a checkpoint or any flush: what a SIGKILL leaves
        let (j, state, report) = try Journal.recover(paths: dir.paths, segmentTag: 7, into: empty(), checkpointBytes: 1 << 30)
        let want = try replayed(records)
        #expect(state.sequences == want.sequences)
        #expect(report.journalRecords == records.count && report.snapshotRecords == 0 && report.tornBytes == 0)
        // The recovered journal continues: one more record, recovered again.
        try j.write(.release(id: 101))
        let again = try Journal.recover(paths: dir.paths, segmentTag: 7, into: empty(), checkpointBytes: 1 << 30)
        #expect(again.state.sequences[101] == nil && again.state.sequences.count == want.sequences.count - 1)
    }

    @Test func aTornLastFrameIsCutOffAtEveryCut() throws {
        let dir = Dir()
        let records = history(3)
        do {
            let j = try Journal.create(paths: dir.paths, segmentTag: 1, model: empty(), checkpointBytes: 1 << 30)
            for r in records { try j.write(r) }
        }
        let whole = try Data(contentsOf: URL(fileURLWithPath: dir.paths.journal))
        // Append one more frame by hand, then cut it at every length: the last record is lost,
        // never the earlier ones, and nothing traps.
        let extra: JournalRecord = .release(id: 101)
        do {
            let (j, _, _) = try Journal.recover(paths: dir.paths, segmentTag: 1, into: empty(), checkpointBytes: 1 << 30)
            try j.write(extra)
        }
        let longer = try Data(contentsOf: URL(fileURLWithPath: dir.paths.journal))
        #expect(longer.count > whole.count)
        for cut in whole.count..<longer.count {
            try longer.prefix(cut).write(to: URL(fileURLWithPath: dir.paths.journal))
            let (_, state, report) = try Journal.recover(paths: dir.paths, segmentTag: 1, into: empty(), checkpointBytes: 1 << 30)
            #expect(state.sequences == (try replayed(records)).sequences)
            #expect(report.tornBytes == cut - whole.count)
            let after = try Data(contentsOf: URL(fileURLWithPath: dir.paths.journal))
            #expect(after.count == whole.count)  // cut back to the last whole frame
        }
        // A flipped byte inside the last frame is a torn frame too.
        var flipped = longer
        flipped[longer.count - 2] ^= 0xFF
        try flipped.write(to: URL(fileURLWithPath: dir.paths.journal))
        let (_, state, report) = try Journal.recover(paths: dir.paths, segmentTag: 1, into: empty(), checkpointBytes: 1 << 30)
        #expect(state.sequences[101] != nil && report.tornBytes == longer.count - whole.count)
    }

    @Test func checkpointsKeepTheStateAndRestartTheJournal() throws {
        let dir = Dir()
        let records = history(40)
        do {
            let j = try Journal.create(paths: dir.paths, segmentTag: 3, model: empty(), checkpointBytes: 2048)
            for r in records { try j.write(r) }
            #expect(j.checkpoints >= 2 && j.journalBytes <= 2048 + 200)
        }
        let (_, state, report) = try Journal.recover(paths: dir.paths, segmentTag: 3, into: empty(), checkpointBytes: 2048)
        #expect(state.sequences == (try replayed(records)).sequences)
        #expect(report.snapshotRecords > 0)
    }

    @Test func aCrashBetweenSnapshotAndJournalRestartSkipsWhatTheSnapshotHolds() throws {
        let dir = Dir()
        let records = history(6)
        let j = try Journal.create(paths: dir.paths, segmentTag: 5, model: empty(), checkpointBytes: 1 << 30)
        for r in records { try j.write(r) }
        let oldJournal = try Data(contentsOf: URL(fileURLWithPath: dir.paths.journal))
        try j.checkpoint()
        // As if the process died after the snapshot's rename but before the journal's.
        try oldJournal.write(to: URL(fileURLWithPath: dir.paths.journal))
        let (_, state, report) = try Journal.recover(paths: dir.paths, segmentTag: 5, into: empty(), checkpointBytes: 1 << 30)
        #expect(state.sequences == (try replayed(records)).sequences)
        #expect(report.journalRecords == 0 && report.snapshotRecords > 0)
    }

    @Test func filesOfAnotherSegmentOrFormatAreRefusedByName() throws {
        let dir = Dir()
        do {
            let j = try Journal.create(paths: dir.paths, segmentTag: 9, model: empty(), checkpointBytes: 1 << 30)
            try j.write(.put(SequenceImage(id: 1, layout: Self.layout)))
        }
        let wrongTag = #expect(throws: Journal.Failure.self) {
            try Journal.recover(paths: dir.paths, segmentTag: 10, into: empty(), checkpointBytes: 1 << 30)
        }
        #expect(wrongTag?.message.contains("segment generation 9") == true)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: dir.paths.journal))
        bytes[8] = 2  // format version 2
        try bytes.write(to: URL(fileURLWithPath: dir.paths.journal))
        let wrongVersion = #expect(throws: Journal.Failure.self) {
            try Journal.recover(paths: dir.paths, segmentTag: 9, into: empty(), checkpointBytes: 1 << 30)
        }
        #expect(wrongVersion?.message.contains("format version 2") == true)
        try FileManager.default.removeItem(atPath: dir.paths.journal)
        let missing = #expect(throws: Journal.Failure.self) {
            try Journal.recover(paths: dir.paths, segmentTag: 9, into: empty(), checkpointBytes: 1 << 30)
        }
        #expect(missing?.message.contains("missing") == true)
    }
}
