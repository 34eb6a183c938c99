import Foundation
import ArgumentParser
import KVDProtocol

/// `kvctl sequences [ID]`: every sequence of the tenant, or one in detail.
struct Sequences: Verb {
    static let configuration = CommandConfiguration(
        abstract: "List the tenant's sequences (id, model, tokens, pages, generation, pin, lease, last method), or show one.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Show this sequence in detail (same as `kvctl sequence ID`).")
    var id: UInt64?

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        if let id { return try SequenceDetail.show(id, session) }
        guard case .listSequences(let list) = try session.call(.listSequences(Kvd_V1_ListSequencesRequest())) else {
            throw unexpectedReply("list_sequences")
        }
        var table = Table(["id", "model", "length", "tokens", "pages", "gen", "pinned", "lease", "idle", "last_method"])
        for s in list.sequences {
            table.add([
                "\(s.sequenceID)", s.model, "\(s.length)", "\(s.tokensHeld)", "\(s.pages)", "\(s.generation)",
                s.pinned ? "yes" : "no", leaseText(s), milliseconds(s.idleMs), s.lastMethod.isEmpty ? "-" : s.lastMethod,
            ])
        }
        let text = "tenant \(list.tenant): \(list.sequences.count) sequences\n" + (list.sequences.isEmpty ? "" : table.render())
        let json: JSONValue = .object(["tenant": j(list.tenant), "sequences": .array(list.sequences.map(sequenceJSON))])
        return (text.trimmingTrailingNewline(), json)
    }
}

/// `kvctl sequence ID`: the same as `kvctl sequences ID`.
struct SequenceShow: Verb {
    static let configuration = CommandConfiguration(
        commandName: "sequence",
        abstract: "One sequence in detail: per-head tokens, position runs, log-weights present, layer aliases.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sequence id.")
    var id: UInt64

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        try SequenceDetail.show(id, session)
    }
}

/// Stats (sizes, lease) plus a METADATA Query (per-head counts, positions, log-weights, aliases).
enum SequenceDetail {
    static func show(_ id: UInt64, _ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        var statsRequest = Kvd_V1_StatsRequest()
        statsRequest.sequenceID = id
        guard case .stats(let stats) = try session.call(.stats(statsRequest)) else { throw unexpectedReply("stats") }
        var query = Kvd_V1_QueryRequest()
        query.sequenceID = id
        query.mode = .metadata
        guard case .query(let q) = try session.call(.query(query)) else { throw unexpectedReply("query") }
        let s = stats.sequence
        var table = Table(["layer", "head", "tokens", "positions", "log_weights", "alias"])
        var heads: [JSONValue] = []
        for h in q.heads {
            let runs = PositionRuns.decode(h.positions)
            let logWeights = !h.logWeights.isEmpty
            table.add([
                "\(h.layer)", "\(h.head)", "\(h.numTokens)", PositionRuns.text(runs), logWeights ? "yes" : "no",
                h.aliased ? "-> layer \(h.ownerLayer)" : "-",
            ])
            heads.append(.object([
                "layer": j(h.layer), "head": j(h.head), "tokens": j(h.numTokens),
                "position_runs": .array(runs.map { .array([j($0.first), j($0.last)]) }),
                "log_weights": j(logWeights), "aliased": j(h.aliased), "owner_layer": h.aliased ? j(h.ownerLayer) : .null,
            ]))
        }
        let aliases = Dictionary(q.heads.filter(\.aliased).map { ($0.layer, $0.ownerLayer) }, uniquingKeysWith: { a, _ in a })
        let summary = keyValues([
            ("sequence", "\(s.sequenceID)"), ("model", s.model), ("tenant", s.tenant), ("length", "\(s.length)"),
            ("tokens", "\(s.tokensHeld) held over \(q.heads.count) heads"), ("pages", "\(s.pages) (\(s.bytes) bytes)"),
            ("generation", "\(s.generation)"), ("pinned", s.pinned ? "yes" : "no"), ("lease", leaseText(s)),
            ("last_method", s.lastMethod.isEmpty ? "-" : s.lastMethod),
            ("aliases", aliases.isEmpty ? "none" : aliases.sorted { $0.key < $1.key }.map { "\($0.key)->\($0.value)" }.joined(separator: ", ")),
        ])
        guard case .object(var doc) = sequenceJSON(s) else { preconditionFailure("sequenceJSON builds an object") }
        doc["heads"] = .array(heads)
        doc["aliases"] = .array(aliases.sorted { $0.key < $1.key }.map { .object(["layer": j($0.key), "owner": j($0.value)]) })
        return (summary + "\n\n" + table.render(), .object(doc))
    }
}

/// Original positions (int32 little-endian) as runs of consecutive values.
enum PositionRuns {
    struct Run { var first: Int32; var last: Int32 }

    static func decode(_ bytes: Data) -> [Run] {
        var runs: [Run] = []
        let count = bytes.count / 4
        bytes.withUnsafeBytes { raw in
            for i in 0..<count {
                let p = Int32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))
                if let last = runs.last?.last, last != Int32.max, p == last + 1 {
                    runs[runs.count - 1].last = p
                } else {
                    runs.append(Run(first: p, last: p))
                }
            }
        }
        return runs
    }

    /// "0-3,72-99"; long lists shortened to their first and last runs.
    static func text(_ runs: [Run]) -> String {
        let parts = runs.map { $0.first == $0.last ? "\($0.first)" : "\($0.first)-\($0.last)" }
        guard parts.count > 8 else { return parts.isEmpty ? "-" : parts.joined(separator: ",") }
        return parts.prefix(4).joined(separator: ",") + ",…(\(parts.count - 8) more)…," + parts.suffix(4).joined(separator: ",")
    }
}

/// One listed sequence, as `sequences --json` and `sequence --json` print it.
func sequenceJSON(_ s: Kvd_V1_SequenceStats) -> JSONValue {
    .object([
        "id": j(s.sequenceID), "model": j(s.model), "tenant": j(s.tenant), "length": j(s.length),
        "tokens_held": j(s.tokensHeld), "pages": j(s.pages), "bytes": j(s.bytes), "generation": j(s.generation),
        "pinned": j(s.pinned), "orphan": j(s.orphan), "idle_ms": j(s.idleMs), "lease_remaining_ms": j(s.leaseRemainingMs),
        "reserved_tokens": j(s.reservedTokens), "aliased_layers": j(s.aliasedLayers),
        "manager_compactions": j(s.managerCompactions), "last_method": j(s.lastMethod),
    ])
}

func leaseText(_ s: Kvd_V1_SequenceStats) -> String {
    if s.orphan { return "orphan" }
    return s.leaseRemainingMs == 0 ? "off" : milliseconds(UInt64(max(0, s.leaseRemainingMs)))
}

func milliseconds(_ ms: UInt64) -> String {
    ms < 10_000 ? "\(ms)ms" : ms < 600_000 ? "\(ms / 1000)s" : "\(ms / 60_000)m"
}

extension String {
    func trimmingTrailingNewline() -> String { hasSuffix("\n") ? String(dropLast()) : self }
}
