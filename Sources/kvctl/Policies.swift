import ArgumentParser
import KVDProtocol

/// `kvctl policies`: policies, rules and model defaults in force.
struct Policies: Verb {
    static let configuration = CommandConfiguration(abstract: "Compaction policies (method, parameters), rules in order, per-model default policy.")
    @OptionGroup var global: GlobalOptions

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        guard case .listPolicies(let p) = try session.call(.listPolicies(Kvd_V1_ListPoliciesRequest())) else { throw unexpectedReply("list_policies") }
        let policies = Table(["policy", "method", "params"]).with(p.policies.map { [$0.name, $0.method, $0.params.isEmpty ? "-" : $0.params.joined(separator: " ")] })
        let rules = Table(["rule", "condition", "policy"]).with(p.rules.map { ["\($0.index)", $0.condition, $0.policy] })
        let models = Table(["model", "default_policy"]).with(p.models.map { [$0.model, $0.defaultPolicy.isEmpty ? "-" : $0.defaultPolicy] })
        let text = [
            p.policies.isEmpty ? "no policies" : policies.render(),
            p.rules.isEmpty ? "no rules" : rules.render(),
            models.render(),
        ].joined(separator: "\n\n")
        let json: JSONValue = .object([
            "policies": .array(p.policies.map { x in
                .object(["name": j(x.name), "method": j(x.method), "params": .object(Dictionary(x.params.map(splitParam), uniquingKeysWith: { _, b in b }))])
            }),
            "rules": .array(p.rules.map { .object(["index": j($0.index), "condition": j($0.condition), "policy": j($0.policy)]) }),
            "models": .array(p.models.map { .object(["model": j($0.model), "default_policy": j($0.defaultPolicy)]) }),
        ])
        return (text, json)
    }

    private func splitParam(_ s: String) -> (String, JSONValue) {
        guard let eq = s.firstIndex(of: "=") else { return (s, j("")) }
        return (String(s[..<eq]), j(String(s[s.index(after: eq)...])))
    }
}

/// `kvctl reload`: what SIGHUP does, with an answer (admin).
struct Reload: Verb {
    static let configuration = CommandConfiguration(abstract: "Reload policies, rules and memory settings from kvd's config file (admin).")
    @OptionGroup var global: GlobalOptions

    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue) {
        guard case .reload(let r) = try session.call(.reload(Kvd_V1_ReloadRequest())) else { throw unexpectedReply("reload") }
        let text = "reloaded: \(r.policies.count) policies (\(r.policies.joined(separator: ", "))), \(r.rules) rules"
        return (text, .object(["policies": .array(r.policies.map { j($0) }), "rules": j(r.rules)]))
    }
}
