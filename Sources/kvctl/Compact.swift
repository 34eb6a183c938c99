import ArgumentParser
import KVDProtocol

/// `kvctl compact ID [--method M | --policy P] [--param k=v]...`
struct Compact: Verb {
    static let configuration = CommandConfiguration(
        abstract: "Compact one sequence now: a method, a policy, or what the rules and model defaults choose.",
        discussion: "Methods that score with the runtime's queries (snapkv, h2o, ...) need queries kvctl does not have; use a query-free method or policy.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sequence id.") var id: UInt64
    @Option(name: .long, help: "Method to run (kvd's Hello lists them), e.g. streamingllm.") var method: String?
    @Option(name: .long, help: "Policy to run (kvctl policies).") var policy: String?
    @Option(name: .customLong("param"), help: ArgumentHelp("A parameter, NAME=VALUE (repeatable); typed as the method declares.", valueName: "NAME=VALUE"))
    var params: [String] = []

    func validate() throws {
        if method != nil, policy != nil { throw ValidationError("give --method or --policy, not both") }
        for p in params where !p.contains("=") || p.hasPrefix("=") { throw ValidationError("--param \(p): write NAME=VALUE") }
    }

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        var request = Kvd_V1_CompactRequest()
        request.sequenceID = id
        request.method = method ?? ""
        request.policy = policy ?? ""
        request.params = params.map { typed($0, session.hello) }
        guard case .compact(let c) = try session.call(.compact(request)) else { throw unexpectedReply("compact") }
        let before = c.heads.reduce(UInt64(0)) { $0 + UInt64($1.before) }
        let kept = c.heads.reduce(UInt64(0)) { $0 + UInt64($1.kept) }
        let how = c.policy.isEmpty ? c.method : "\(c.policy) (\(c.method))"
        let text = "compacted \(c.sequenceID) with \(how), chosen by \(c.chosenBy): \(before) -> \(kept) tokens, \(c.pagesFreed) pages (\(c.bytesFreed) bytes) freed, generation \(c.generation), \(c.elapsedNs / 1000) us"
        let json: JSONValue = .object([
            "sequence_id": j(c.sequenceID), "method": j(c.method), "policy": j(c.policy), "chosen_by": j(c.chosenBy),
            "tokens_before": j(before), "tokens_after": j(kept), "pages_freed": j(c.pagesFreed), "bytes_freed": j(c.bytesFreed),
            "generation": j(c.generation), "elapsed_ns": j(c.elapsedNs),
            "aliases": .array(c.aliases.map { .object(["layer": j($0.layer), "owner": j($0.owner)]) }),
        ])
        return (text, json)
    }

    /// NAME=VALUE typed by the parameter's declared type (the method named, else any method that
    /// has a parameter of that name); unknown names go as they look, and kvd names what is wrong.
    private func typed(_ text: String, _ hello: Kvd_V1_HelloResponse) -> Kvd_V1_Param {
        let eq = text.firstIndex(of: "=")!
        let name = String(text[..<eq]), value = String(text[text.index(after: eq)...])
        let methods = hello.methods.filter { $0.name == method } + hello.methods
        let declared = methods.lazy.flatMap(\.params).first { $0.name == name }?.type
        var p = Kvd_V1_Param()
        p.name = name
        switch declared {
        case "int": if let v = Int64(value) { p.intValue = v; return p }
        case "float": if let v = Double(value) { p.floatValue = v; return p }
        case "bool": if let v = Bool(value) { p.boolValue = v; return p }
        case "string": p.stringValue = value; return p
        default: break
        }
        if let v = Int64(value) { p.intValue = v } else if let v = Double(value) { p.floatValue = v } else if let v = Bool(value) { p.boolValue = v } else { p.stringValue = value }
        return p
    }
}
