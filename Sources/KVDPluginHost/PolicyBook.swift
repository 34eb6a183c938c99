import KVDConfig
import KVDCore
import KVDPluginAPI

/// What a Compact request runs: a method, the parameters to apply (policy's first, then the
/// request's overrides), and why it was chosen.
public struct Choice: Sendable {
    public let method: any CompactionMethod
    public let params: ResolvedParams
    /// Policy name, "" when the request named a method.
    public let policy: String
    /// "request", "rule 2: arena_used_above 0.8", "model default policy", "model default method".
    public let chosenBy: String
}

/// The state a rule looks at.
public struct RuleState: Sendable {
    public let model: ModelLayout
    public let length: Int
    /// Arena pages in use, 0...1.
    public let arenaUsed: Double
    public init(model: ModelLayout, length: Int, arenaUsed: Double) {
        self.model = model
        self.length = length
        self.arenaUsed = arenaUsed
    }
}

/// Policies and rules compiled against the available methods. Built at start-up and on SIGHUP;
/// a config that does not compile is refused whole, so a reload never leaves a half-new book.
public struct PolicyBook: Sendable {
    struct Policy: Sendable {
        let name: String
        let method: any CompactionMethod
        let params: [(name: String, value: ParamValue)]
        let summary: String
    }

    private let policies: [String: Policy]
    private let rules: [Configuration.Rule]
    /// Model name → default policy, from the config (reloadable, unlike the layouts).
    private let modelDefaults: [String: String]
    public let registry: MethodRegistry
    public let baseDirectory: String
    /// `files.directories` (absolute): where files named by requests may be (default: the config
    /// file's directory). A policy's file named by a relative path must resolve there or inside
    /// the config file's directory; an absolute one is the operator's choice (`FileAccess`).
    public let fileDirectories: [String]

    /// Compiles `config`'s policies against `registry`: unknown methods or stages, unknown
    /// parameters, wrong types, out-of-range values and unreadable head-score files are errors
    /// naming the policy and its line.
    public init(config: Configuration, registry: MethodRegistry, file: String) throws(ConfigError) {
        self.registry = registry
        baseDirectory = config.baseDirectory
        fileDirectories = config.fileDirectories.isEmpty ? [config.baseDirectory] : config.fileDirectories
        let configFiles = FileAccess(baseDirectory: config.baseDirectory, directories: fileDirectories)
        rules = config.rules
        modelDefaults = Dictionary(uniqueKeysWithValues: config.models.map { ($0.name, $0.defaultPolicy) })
        var compiled: [String: Policy] = [:]
        for p in config.policies {
            func fail(_ e: KVDError) -> ConfigError {
                ConfigError("\(file):\(p.line): policies.\(p.name): \(e.message.dropFirst(5))")
            }
            let method: any CompactionMethod
            let summary: String
            do {
                var m: any CompactionMethod
                var parts: [String]
                if let name = p.method {
                    m = try registry.method(named: name)
                    parts = [name]
                } else if let scorer = p.scorer {
                    m = try Catalog.compose(scorer: scorer, allocator: p.allocator)
                    parts = ["scorer=\(scorer)", "allocator=\(p.allocator ?? "uniform")"]
                } else {
                    m = try Catalog.sharerOnly(p.sharer ?? "")
                    parts = []
                }
                if let stopper = p.stopper {
                    m = try Catalog.stop(m, with: stopper)
                    parts.append("stopper=\(stopper)")
                }
                if let sharer = p.sharer, p.method != nil || p.scorer != nil {
                    m = try Catalog.share(m, with: sharer)
                    parts.append("sharer=\(sharer)")
                } else if let sharer = p.sharer {
                    parts.append("sharer=\(sharer)")
                }
                method = m
                summary = parts.joined(separator: " ")
                let params = p.params.map { (name: $0.name, value: $0.value) }
                let resolved = try method.descriptor.resolve(params)
                // Check against each model that uses this policy by default, else generically.
                let users = config.models.filter { $0.defaultPolicy == p.name }
                for layout in users.isEmpty ? [nil] : users.map(Optional.some) {
                    try method.check(resolved, CheckContext(layout: layout, baseDirectory: config.baseDirectory, files: configFiles))
                }
                compiled[p.name] = Policy(name: p.name, method: method, params: params, summary: summary)
            } catch {
                throw fail(error)
            }
        }
        policies = compiled
    }

    /// File access for a compaction whose request set the parameters `requestParams` (a file
    /// they name must be inside `fileDirectories`; the others are the operator's).
    public func files(requestParams: Set<String>) -> FileAccess {
        FileAccess(baseDirectory: baseDirectory, directories: fileDirectories, requestParams: requestParams)
    }

    /// (name, method summary, "param=value" list) of every policy, sorted by name, for Hello.
    /// The rules in the order they are tried (`kvctl policies`).
    public var ruleList: [Configuration.Rule] { rules }

    /// Model name → its default policy ("" for none).
    public var modelDefaultPolicies: [String: String] { modelDefaults }

    public var summaries: [(name: String, method: String, params: [String])] {
        policies.values.sorted { $0.name < $1.name }.map { p in
            (p.name, p.summary, p.params.map { "\($0.name)=\($0.value)" })
        }
    }

    /// Chooses what a Compact request runs. `method` wins over `policy`; with neither, the first
    /// matching rule, then the model's default policy, then its default method.
    public func choose(
        method: String, policy: String, overrides: [(name: String, value: ParamValue)], state: RuleState
    ) throws(KVDError) -> Choice {
        if !method.isEmpty {
            let m = try registry.method(named: method)
            return Choice(method: m, params: try resolve(m, [], overrides, state), policy: "", chosenBy: "request")
        }
        if !policy.isEmpty {
            guard let p = policies[policy] else {
                throw .notFound("unknown policy '\(policy)'; configured: \(policies.keys.sorted().joined(separator: ", "))")
            }
            return try run(p, overrides, state, "request")
        }
        for (i, r) in rules.enumerated() where matches(r, state) {
            if let p = policies[r.policy] { return try run(p, overrides, state, "rule \(i + 1): \(r.condition)") }
        }
        if let name = modelDefaults[state.model.name], let p = policies[name] {
            return try run(p, overrides, state, "model default policy")
        }
        let m = try registry.method(named: state.model.defaultMethod)
        return Choice(method: m, params: try resolve(m, [], overrides, state), policy: "", chosenBy: "model default method")
    }

    private func run(_ p: Policy, _ overrides: [(name: String, value: ParamValue)], _ state: RuleState, _ why: String) throws(KVDError) -> Choice {
        Choice(method: p.method, params: try resolve(p.method, p.params, overrides, state), policy: p.name, chosenBy: why)
    }

    private func resolve(
        _ m: any CompactionMethod, _ base: [(name: String, value: ParamValue)], _ overrides: [(name: String, value: ParamValue)],
        _ state: RuleState
    ) throws(KVDError) -> ResolvedParams {
        let merged = base.filter { b in !overrides.contains { $0.name == b.name } } + overrides
        let params = try m.descriptor.resolve(merged)
        try m.check(params, CheckContext(layout: state.model, baseDirectory: baseDirectory, files: files(requestParams: Set(overrides.map(\.name)))))
        return params
    }

    private func matches(_ r: Configuration.Rule, _ s: RuleState) -> Bool {
        if let a = r.arenaUsedAbove, !(s.arenaUsed > a) { return false }
        if let l = r.lengthAbove, !(s.length > l) { return false }
        if let m = r.model, m != s.model.name { return false }
        return true
    }
}
