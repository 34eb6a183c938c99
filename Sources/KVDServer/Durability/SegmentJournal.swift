import KVDCore
import KVDJournal
import Synchronization

/// One tenant segment's journal as the handlers use it (docs/DURABILITY.md). Each committed change
/// is recorded before its reply goes out; a release or eviction before its pages go back.
///
/// Recording never fails a request: if the journal cannot be written (the file system is full),
/// kvd logs it, deletes the journal so no later start adopts a segment it no longer describes, and
/// goes on without durability for this tenant (logged as an error). Nothing the clients hold
/// is lost by that; only a later crash would be.
final class SegmentJournal: Sendable {
    let journal: Journal
    private let tenant: String
    private let logger: Logger?
    private let broken = Atomic<Bool>(false)

    init(_ journal: Journal, tenant: String, logger: Logger?) {
        self.journal = journal
        self.tenant = tenant
        self.logger = logger
    }

    var isDurable: Bool { !broken.load(ordering: .relaxed) }

    func record(_ r: JournalRecord) {
        guard isDurable else { return }
        do throws(Journal.Failure) {
            try journal.write(r)
        } catch {
            guard !broken.exchange(true, ordering: .relaxed) else { return }
            journal.removeFiles()
            logger?.error("tenant '\(tenant)': cannot write the journal (\(error.message)); durability is off for it until restart, and a crash now loses its sequences")
        }
    }

    /// A sequence's whole state (created, adopted, forked, compacted, aliased).
    func put(_ seq: KVSequence, pinned: Bool) { record(.put(seq.image(pinned: pinned))) }

    /// An append or commit: the pages each head took beyond `before` (page counts per head).
    func appended(_ seq: KVSequence, tokens: Int, pagesBefore before: [Int]) {
        record(.append(id: seq.id.raw, tokens: tokens, newPages: seq.pagesAdded(since: before)))
    }
}
