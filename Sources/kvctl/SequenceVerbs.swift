import ArgumentParser
import KVDProtocol

/// `kvctl release ID`: frees the sequence (its id answers NOT_FOUND afterwards).
struct Release: Verb {
    static let configuration = CommandConfiguration(abstract: "Release one sequence: its pages go back to the tenant's segment.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sequence id.") var id: UInt64

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        var r = Kvd_V1_ReleaseRequest()
        r.sequenceID = id
        guard case .release(let out) = try session.call(.release(r)) else { throw unexpectedReply("release") }
        return ("released \(id): \(out.pagesFreed) pages (\(out.bytesFreed) bytes) freed",
                .object(["sequence_id": j(id), "pages_freed": j(out.pagesFreed), "bytes_freed": j(out.bytesFreed)]))
    }
}

/// `kvctl pin ID` / `kvctl unpin ID`.
struct Pin: Verb {
    static let configuration = CommandConfiguration(abstract: "Pin one sequence: the memory manager never compresses or evicts it.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sequence id.") var id: UInt64

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) { try setPin(id, true, session) }
}

struct Unpin: Verb {
    static let configuration = CommandConfiguration(abstract: "Unpin one sequence.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sequence id.") var id: UInt64

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) { try setPin(id, false, session) }
}

private func setPin(_ id: UInt64, _ pinned: Bool, _ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
    var r = Kvd_V1_PinRequest()
    r.sequenceID = id
    r.pinned = pinned
    guard case .pin(let out) = try session.call(.pin(r)) else { throw unexpectedReply("pin") }
    return ("\(out.pinned ? "pinned" : "unpinned") \(id); the tenant's pinned pages: \(out.pinnedPages)",
            .object(["sequence_id": j(id), "pinned": j(out.pinned), "pinned_pages": j(out.pinnedPages)]))
}

/// `kvctl evict ID`: the memory manager's eviction, now (admin).
struct Evict: Verb {
    static let configuration = CommandConfiguration(
        abstract: "Evict one sequence now as the memory manager would (remote offload when configured; admin).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sequence id.") var id: UInt64

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        var r = Kvd_V1_EvictRequest()
        r.sequenceID = id
        guard case .evict(let out) = try session.call(.evict(r)) else { throw unexpectedReply("evict") }
        let text = "evicted \(id): \(out.tokensHeld) tokens, \(out.pagesFreed) pages (\(out.bytesFreed) bytes) freed" + (out.offloaded ? ", offloaded to the remote tier" : "")
        return (text, .object([
            "sequence_id": j(out.sequenceID), "pages_freed": j(out.pagesFreed), "bytes_freed": j(out.bytesFreed),
            "offloaded": j(out.offloaded), "tokens_held": j(out.tokensHeld),
        ]))
    }
}

/// `kvctl restore ID`: bring an evicted sequence back from the remote tier.
struct Restore: Verb {
    static let configuration = CommandConfiguration(abstract: "Restore an evicted sequence from the remote tier into pages.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sequence id.") var id: UInt64

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        var r = Kvd_V1_RestoreRequest()
        r.sequenceID = id
        guard case .restore(let out) = try session.call(.restore(r)) else { throw unexpectedReply("restore") }
        let text = "restored \(out.sequenceID): length \(out.length), generation \(out.generation), \(out.bytes) bytes"
            + (out.fromRemote ? " from the remote tier in \(out.restoreUs) us" : " (it was still here)")
        return (text, .object([
            "sequence_id": j(out.sequenceID), "length": j(out.length), "generation": j(out.generation),
            "from_remote": j(out.fromRemote), "restore_us": j(out.restoreUs), "bytes": j(out.bytes),
        ]))
    }
}
