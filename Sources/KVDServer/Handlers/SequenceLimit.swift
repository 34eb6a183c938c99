import KVDCore

/// `server.max_sequence_tokens`: the longest a sequence's logical length (tokens ever appended,
/// which compaction never lowers) may grow. Positions are int32, so the limit is at most 2^31 - 1.
enum SequenceLimit {
    /// Refuses `tokens` more tokens for `seq` when its length would pass `limit`; changes nothing.
    static func check(_ seq: KVSequence, adding tokens: Int, limit: Int, _ action: String) throws(KVDError) {
        let (end, overflow) = seq.length.addingReportingOverflow(tokens)
        guard !overflow, end <= min(limit, KVSequence.maxLength) else {
            throw .invalidArgument(
                "\(action): \(tokens) more tokens would take sequence \(seq.id.raw) from \(seq.length) to "
                    + "\(overflow ? "more than \(Int.max)" : String(end)) tokens, past server.max_sequence_tokens "
                    + "(\(min(limit, KVSequence.maxLength))); a sequence's length never shrinks (compaction keeps it), start a new sequence")
        }
    }
}
